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
		{"Test[/]Faults/Reset", "^TestFaults$/Reset"},
	} {
		if got := childRunPattern("TestFaults", tc.parent); got != tc.want {
			t.Errorf("childRunPattern(%q): got %q, want %q", tc.parent, got, tc.want)
		}
	}
}
