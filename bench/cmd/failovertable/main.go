// Command failovertable turns the "failover-result" lines that the bench
// module's TestFailover logs (go test -v output, any number of runs and
// files) into a markdown table: per scenario and client, the range of each
// measurement over the runs, the target, and whether every run met it.
//
// Usage:
//
//	failovertable [file ...]   (standard input if no file is named)
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// marker starts the part of a line that holds one run's result.
const marker = "failover-result "

// scenario is a group of rows of the table.
type scenario struct {
	name, what string
	targets    []target
}

// target is one criterion of a scenario: a bound on one measure.
type target struct {
	measure string // the row it applies to
	text    string
	ok      func(r result) bool
}

// Targets from issue 17. A writer that had not reached the new master by
// the end of a run (open) misses any outage bound; so does a consumer that
// never got the item any consumer bound.
var scenarios = []scenario{
	{"F1", "`SENTINEL FAILOVER` (planned)", []target{
		{"outage", "≤ 0.5", func(r result) bool { return r.outageWithin(0.5) }},
		{"lost", "≤ 5", func(r result) bool { return r.lost <= 5 }},
		{"failed", "0", func(r result) bool { return r.failed == 0 }},
		{"consumer", "≤ 1", func(r result) bool { return r.consumerWithin(1) }},
	}},
	{"F2", "master killed (SIGKILL)", []target{
		{"outage", "≤ switch + 0.5", func(r result) bool { return r.switchAt >= 0 && r.outageWithin(r.switchAt+0.5) }},
		{"lost", "0", func(r result) bool { return r.lost == 0 }},
		{"failed", "≤ 1", func(r result) bool { return r.failed <= 1 }},
		{"consumer", "≤ 1", func(r result) bool { return r.consumerWithin(1) }},
	}},
	{"F3", "master cut off from the sentinels only, clients still reach it (8 s)", []target{
		{"outage", "≤ 0.5", func(r result) bool { return r.outageWithin(0.5) }},
		{"lost", "≤ 5", func(r result) bool { return r.lost <= 5 }},
	}},
	{"F4", "fixed address moves to the promoted replica, old primary demoted", []target{
		{"outage", "≤ 0.5", func(r result) bool { return r.outageWithin(0.5) }},
		{"lost", "≤ 1", func(r result) bool { return r.lost <= 1 }},
		{"failed", "0", func(r result) bool { return r.failed == 0 }},
	}},
}

// measures are the rows of each scenario, in order, with their cells.
var measures = []struct {
	name, label string
	cell        func(rs []result) string
}{
	{"outage", "outage (s)", outageCell},
	{"lost", "lost", func(rs []result) string { return intRange(rs, func(r result) int { return r.lost }) }},
	{"failed", "failed", func(rs []result) string { return intRange(rs, func(r result) int { return r.failed }) }},
	{"consumer", "consumer (s)", consumerCell},
	{"switch", "sentinels' switch (s)", switchCell},
}

// clientOrder is the order of the clients within a scenario; others follow
// in the order first seen.
var clientOrder = []string{"redisalive", "go-redis", "rueidis"}

// result is one run of one client in one scenario. Times are in seconds;
// a negative consumer or switch time means it did not happen.
type result struct {
	scenario, client string
	outage           float64
	open             bool // the writer had not recovered: outage is a lower bound
	lost, failed     int
	consumer         float64
	within           float64 // how long the consumer and the writer were given
	switchAt         float64
}

func (r result) outageWithin(limit float64) bool { return !r.open && r.outage <= limit }

func (r result) consumerWithin(limit float64) bool { return r.consumer >= 0 && r.consumer <= limit }

func main() {
	var results []result
	if len(os.Args) == 1 {
		rs, err := parse(os.Stdin)
		if err != nil {
			fail(err)
		}
		results = rs
	}
	for _, path := range os.Args[1:] {
		f, err := os.Open(path)
		if err != nil {
			fail(err)
		}
		rs, err := parse(f)
		f.Close()
		if err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
		results = append(results, rs...)
	}
	if len(results) == 0 {
		fail(fmt.Errorf("no %q lines in the input", strings.TrimSpace(marker)))
	}
	w := bufio.NewWriter(os.Stdout)
	write(w, results)
	if err := w.Flush(); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "failovertable:", err)
	os.Exit(1)
}

// parse reads the results in r: the key=value fields after marker.
func parse(r io.Reader) ([]result, error) {
	var results []result
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		_, rest, ok := strings.Cut(sc.Text(), marker)
		if !ok {
			continue
		}
		f := map[string]string{}
		for _, kv := range strings.Fields(rest) {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		res, err := fromFields(f)
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", sc.Text(), err)
		}
		results = append(results, res)
	}
	return results, sc.Err()
}

func fromFields(f map[string]string) (result, error) {
	var errs []error
	secs := func(key string) float64 {
		if f[key] == "none" {
			return -1
		}
		v, err := strconv.ParseFloat(f[key], 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
		return v
	}
	count := func(key string) int {
		v, err := strconv.Atoi(f[key])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
		return v
	}
	r := result{
		scenario: f["scenario"], client: f["client"],
		outage: secs("outage"), open: f["open"] == "1",
		lost: count("lost"), failed: count("failed"),
		consumer: secs("consumer"), within: secs("within"), switchAt: secs("switch"),
	}
	if r.scenario == "" || r.client == "" {
		errs = append(errs, fmt.Errorf("no scenario or client"))
	}
	if len(errs) > 0 {
		return result{}, errs[0]
	}
	return r, nil
}

func write(w io.Writer, results []result) {
	clients := slices.Clone(clientOrder)
	for _, r := range results {
		if !slices.Contains(clients, r.client) {
			clients = append(clients, r.client)
		}
	}
	runs := func(sc, cl string) []result {
		var rs []result
		for _, r := range results {
			if r.scenario == sc && r.client == cl {
				rs = append(rs, r)
			}
		}
		return rs
	}
	var present []string
	for _, cl := range clients {
		for _, sc := range scenarios {
			if len(runs(sc.name, cl)) > 0 {
				present = append(present, cl)
				break
			}
		}
	}

	fmt.Fprintln(w, "Ranges over the runs (min–max), times in seconds. A value in bold missed its target in at least one run.")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "| scenario | measure | %s | target |\n", strings.Join(present, " | "))
	fmt.Fprintf(w, "|---|---|%s---|\n", strings.Repeat("---|", len(present)))
	for _, sc := range scenarios {
		measured := false
		for _, cl := range present {
			measured = measured || len(runs(sc.name, cl)) > 0
		}
		if !measured {
			continue
		}
		label := sc.name + " " + sc.what
		for _, m := range measures {
			var cells []string
			shown := false
			for _, cl := range present {
				rs := runs(sc.name, cl)
				if len(rs) == 0 {
					cells = append(cells, "")
					continue
				}
				c := m.cell(rs)
				if c == "" {
					cells = append(cells, "—")
					continue
				}
				shown = true
				if missed := missedBy(sc, m.name, rs); missed > 0 {
					c = "**" + c + "**"
					if missed < len(rs) {
						c += fmt.Sprintf(" (%d of %d)", missed, len(rs))
					}
				}
				cells = append(cells, c)
			}
			if !shown {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", label, m.label, strings.Join(cells, " | "), targetText(sc, m.name))
			label = ""
		}
		var met []string
		for _, cl := range present {
			met = append(met, metCell(sc, runs(sc.name, cl)))
		}
		fmt.Fprintf(w, "| | target met | %s | |\n", strings.Join(met, " | "))
	}
	fmt.Fprintln(w)
}

// missedBy counts the runs of rs that missed sc's target on measure.
func missedBy(sc scenario, measure string, rs []result) int {
	n := 0
	for _, r := range rs {
		for _, t := range sc.targets {
			if t.measure == measure && !t.ok(r) {
				n++
				break
			}
		}
	}
	return n
}

func targetText(sc scenario, measure string) string {
	for _, t := range sc.targets {
		if t.measure == measure {
			return t.text
		}
	}
	return "—"
}

// outageCell is the range of the outages of the writers that recovered,
// and how many did not.
func outageCell(rs []result) string {
	var closed []float64
	for _, r := range rs {
		if !r.open {
			closed = append(closed, r.outage)
		}
	}
	return withMissing(floatRange(closed), len(rs)-len(closed), len(rs), rs[0].within)
}

func consumerCell(rs []result) string {
	var got []float64
	for _, r := range rs {
		if r.consumer >= 0 {
			got = append(got, r.consumer)
		}
	}
	return withMissing(floatRange(got), len(rs)-len(got), len(rs), rs[0].within)
}

func switchCell(rs []result) string {
	var at []float64
	for _, r := range rs {
		if r.switchAt >= 0 {
			at = append(at, r.switchAt)
		}
	}
	return floatRange(at)
}

// withMissing adds to a range how many of n runs did not recover within
// the given seconds.
func withMissing(rng string, missing, n int, within float64) string {
	if missing == 0 {
		return rng
	}
	note := fmt.Sprintf("not recovered in %g s", within)
	if missing == n {
		return fmt.Sprintf("%s (%d of %d)", note, missing, n)
	}
	return fmt.Sprintf("%s; %s in %d of %d", rng, note, missing, n)
}

func floatRange(v []float64) string {
	if len(v) == 0 {
		return ""
	}
	lo, hi := slices.Min(v), slices.Max(v)
	if fmt.Sprintf("%.2f", lo) == fmt.Sprintf("%.2f", hi) {
		return fmt.Sprintf("%.2f", lo)
	}
	return fmt.Sprintf("%.2f–%.2f", lo, hi)
}

func intRange(rs []result, get func(result) int) string {
	lo, hi := get(rs[0]), get(rs[0])
	for _, r := range rs[1:] {
		lo, hi = min(lo, get(r)), max(hi, get(r))
	}
	if lo == hi {
		return strconv.Itoa(lo)
	}
	return fmt.Sprintf("%d–%d", lo, hi)
}

// metCell says whether every run of rs met every target of sc, with the
// number of runs.
func metCell(sc scenario, rs []result) string {
	if len(rs) == 0 {
		return ""
	}
	for _, r := range rs {
		for _, t := range sc.targets {
			if !t.ok(r) {
				return "**no**" + plural(len(rs))
			}
		}
	}
	return "yes" + plural(len(rs))
}

// plural says how many runs a verdict is over.
func plural(runs int) string {
	if runs == 1 {
		return ", 1 run"
	}
	return fmt.Sprintf(", %d runs", runs)
}
