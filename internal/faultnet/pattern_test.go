//go:build linux

package faultnet

import "testing"

func TestChildRunPatternKeepsTheParentsSubtestLevels(t *testing.T) {
	for _, tc := range []struct{ parent, want string }{
		{"", "^TestFaults$"},
		{"TestFaults", "^TestFaults$"},
		{"Test(Faults|Other)", "^TestFaults$"},
		{"TestFaults/KeepAlive", "^TestFaults$/KeepAlive"},
		{"TestFaults/Keep/x", "^TestFaults$/Keep/x"},
		{"TestFaults/Re[/]set", "^TestFaults$/Re[/]set"},
		// A top-level | separates whole patterns, each with its levels.
		{"TestOther|TestFaults/Keep|Slow", "^TestFaults$/Keep"},
		{"TestFaults/Keep|TestFaults/Reset", "^TestFaults$/Keep|^TestFaults$/Reset"},
		{"TestFaults/Keep|Faults", "^TestFaults$"},
		{"Test(Faults|Other)/Keep(Alive|x)", "^TestFaults$/Keep(Alive|x)"},
	} {
		if got := childRunPattern("TestFaults", tc.parent); got != tc.want {
			t.Errorf("childRunPattern(%q): got %q, want %q", tc.parent, got, tc.want)
		}
	}
}
