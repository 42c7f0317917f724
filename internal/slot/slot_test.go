package slot

import "testing"

func TestOfMatchesRedisClusterSpecification(t *testing.T) {
	cases := map[string]int{
		"123456789":            0x31C3 % Count, // the CRC-16/XMODEM check value
		"foo":                  12182,
		"bar":                  5061,
		"{user1000}.following": Of("user1000"),
		"foo{}{bar}":           Of("foo{}{bar}"), // an empty tag hashes the whole key
		"foo{{bar}}zap":        Of("{bar"),
		"foo{bar}{zap}":        Of("bar"),
		"":                     0,
	}
	for key, want := range cases {
		if got := Of(key); got != want {
			t.Errorf("Of(%q): got %d, want %d", key, got, want)
		}
		if got := Of([]byte(key)); got != want {
			t.Errorf("Of([]byte(%q)): got %d, want %d", key, got, want)
		}
	}
}

func TestOfAllocatesNothing(t *testing.T) {
	b := []byte("{user}.key")
	if n := testing.AllocsPerRun(100, func() { Of("{user}.key"); Of(b) }); n != 0 {
		t.Errorf("got %v allocations, want 0", n)
	}
}
