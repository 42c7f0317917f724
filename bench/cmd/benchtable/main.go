// Command benchtable turns the output of the bench module's go test -bench
// runs (any -count, any number of concatenated runs) into markdown tables:
// the median of every metric per benchmark, redisalive-Do's throughput
// relative to raw redigo in every cell, and whether the performance
// targets in BENCHMARKS.md are met: the GET/SET cells' (one connection per
// goroutine) and, separately, the contended cells' (ContendedGET/SET:
// default pool sizes, more goroutines than connections).
//
// Usage:
//
//	benchtable [file ...]   (standard input if no file is named)
package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Targets from the benchmark issues.
const (
	minThroughputRatio = 0.97 // redisalive-Do ops/s over redigo's; redisalive-auto's too at 1 goroutine
	maxExtraAllocs     = 1    // redisalive-Do allocs/op over redigo's
	minAutoRatio       = 1.5  // redisalive-auto ops/s over redigo's at 16 and 64 goroutines, where it must also beat rueidis

	// The contended cells' targets: redisalive-Do at least as fast as
	// redigo with no more allocs/op, and redisalive-auto at least as fast
	// as rueidis at contendedAutoConc goroutines.
	minContendedRatio = 1.0
	contendedAutoConc = 16

	// contendedPrefix starts the ops of the contended cells.
	contendedPrefix = "Contended"

	// busyHealth must report 0 pings/min: the health checker must leave
	// connections in steady use alone.
	busyHealth = "BenchmarkHealthCheck/load=busy"
)

// Clients of the GET/SET matrix, in table order; the first two are the
// pair the targets compare.
var matrixClients = []string{"redisalive-Do", "redigo", "redisalive-auto", "rueidis", "redisalive-Get", "go-redis"}

var (
	// procsSuffix is the -GOMAXPROCS suffix go test appends to names.
	procsSuffix = regexp.MustCompile(`-\d+$`)
	// matrixName is a GET/SET cell: Benchmark<OP>/client=<c>/conc=<n>.
	matrixName = regexp.MustCompile(`^Benchmark(\w+)/client=([^/]+)/conc=(\d+)$`)
)

// samples holds every value seen for each benchmark and unit.
type samples struct {
	order []string                        // benchmark names, first seen first
	units map[string][]string             // per name, units in first-seen order
	vals  map[string]map[string][]float64 // name -> unit -> values
}

func main() {
	s := &samples{units: map[string][]string{}, vals: map[string]map[string][]float64{}}
	if len(os.Args) == 1 {
		if err := s.parse(os.Stdin); err != nil {
			fail(err)
		}
	}
	for _, path := range os.Args[1:] {
		f, err := os.Open(path)
		if err != nil {
			fail(err)
		}
		err = s.parse(f)
		f.Close()
		if err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
	}
	if len(s.order) == 0 {
		fail(fmt.Errorf("no benchmark results in the input"))
	}
	w := bufio.NewWriter(os.Stdout)
	s.write(w)
	if err := w.Flush(); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchtable:", err)
	os.Exit(1)
}

// parse reads result lines: name, iteration count, then value-unit pairs.
// Everything else (headers, PASS, logs) is skipped.
func (s *samples) parse(r io.Reader) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := procsSuffix.ReplaceAllString(f[0], "")
		if s.vals[name] == nil {
			s.order = append(s.order, name)
			s.vals[name] = map[string][]float64{}
		}
		for i := 2; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return fmt.Errorf("line %q: %w", sc.Text(), err)
			}
			unit := f[i+1]
			if s.vals[name][unit] == nil {
				s.units[name] = append(s.units[name], unit)
			}
			s.vals[name][unit] = append(s.vals[name][unit], v)
		}
	}
	return sc.Err()
}

// median of name's values in unit, and whether there were any.
func (s *samples) median(name, unit string) (float64, bool) {
	v := slices.Clone(s.vals[name][unit])
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	m := len(v) / 2
	if len(v)%2 == 0 {
		return (v[m-1] + v[m]) / 2, true
	}
	return v[m], true
}

func (s *samples) runs(name string) int { return len(s.vals[name]["ns/op"]) }

// cell is one operation at one concurrency.
type cell struct {
	op   string
	conc int
}

func (c cell) contended() bool { return strings.HasPrefix(c.op, contendedPrefix) }

func (s *samples) write(w io.Writer) {
	var cells []cell
	seen := map[cell]bool{}
	var other []string
	for _, name := range s.order {
		m := matrixName.FindStringSubmatch(name)
		if m == nil {
			other = append(other, name)
			continue
		}
		conc, _ := strconv.Atoi(m[3])
		c := cell{m[1], conc}
		if !seen[c] {
			seen[c] = true
			cells = append(cells, c)
		}
	}
	// The contended cells come after the others, which they are read
	// against.
	slices.SortStableFunc(cells, func(a, b cell) int {
		return cmp.Or(compareBool(a.contended(), b.contended()), cmp.Compare(a.op, b.op), cmp.Compare(a.conc, b.conc))
	})
	i := slices.IndexFunc(cells, cell.contended)
	if i < 0 {
		i = len(cells)
	}
	plain, contended := cells[:i], cells[i:]

	if len(cells) > 0 {
		s.writeMatrix(w, cells)
	}
	// Each set of cells has its own targets: the old ones would judge the
	// contended cells against bounds set for one connection per goroutine.
	if len(plain) > 0 {
		s.writeTargets(w, plain)
		s.writeAutoTargets(w, plain)
	}
	if len(contended) > 0 {
		s.writeContendedTargets(w, contended)
	}
	if pings, ok := s.median(busyHealth, "pings/min"); ok {
		met := "yes"
		if pings > 0 {
			met = "**no**"
		}
		fmt.Fprintf(w, "Target: no health-check PINGs on busy connections: %g pings/min, met: %s.\n\n", pings, met)
	}
	if len(other) > 0 {
		s.writeOther(w, other)
	}
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

func matrixBench(c cell, client string) string {
	return fmt.Sprintf("Benchmark%s/client=%s/conc=%d", c.op, client, c.conc)
}

func (s *samples) writeMatrix(w io.Writer, cells []cell) {
	fmt.Fprintln(w, "Medians per cell; \"vs redigo\" is the client's ops/s over raw redigo's;")
	fmt.Fprintln(w, "cpu-ns/op is the benchmark process's CPU time per operation (redis-server's not included).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| op | goroutines | client | ns/op | ops/s | cpu-ns/op | B/op | allocs/op | vs redigo | runs |")
	fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, c := range cells {
		base, hasBase := s.median(matrixBench(c, "redigo"), "ops/s")
		for _, cl := range matrixClients {
			name := matrixBench(c, cl)
			if s.runs(name) == 0 {
				continue
			}
			ratio := "—"
			if ops, ok := s.median(name, "ops/s"); ok && hasBase {
				ratio = fmt.Sprintf("%.3f", ops/base)
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %d |\n",
				c.op, c.conc, cl, s.fmt(name, "ns/op"), s.fmt(name, "ops/s"), s.fmt(name, "cpu-ns/op"),
				s.fmt(name, "B/op"), s.fmt(name, "allocs/op"), ratio, s.runs(name))
		}
	}
	fmt.Fprintln(w)
}

// pair returns the medians of unit for clients a and b in cell c, and
// whether both exist.
func (s *samples) pair(c cell, a, b, unit string) (va, vb float64, ok bool) {
	va, okA := s.median(matrixBench(c, a), unit)
	vb, okB := s.median(matrixBench(c, b), unit)
	return va, vb, okA && okB
}

// writeTargets checks, per cell, redisalive-Do against raw redigo.
func (s *samples) writeTargets(w io.Writer, cells []cell) {
	fmt.Fprintf(w, "Targets: redisalive-Do throughput >= %.2fx redigo, allocs/op <= redigo + %d.\n\n",
		minThroughputRatio, maxExtraAllocs)
	fmt.Fprintln(w, "| op | goroutines | Do/redigo ops/s | Do allocs/op | redigo allocs/op | met |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|")
	for _, c := range cells {
		doOps, rgOps, ok1 := s.pair(c, "redisalive-Do", "redigo", "ops/s")
		doAllocs, rgAllocs, ok2 := s.pair(c, "redisalive-Do", "redigo", "allocs/op")
		if !ok1 || !ok2 {
			continue
		}
		ratio := doOps / rgOps
		met := "yes"
		if ratio < minThroughputRatio || doAllocs > rgAllocs+maxExtraAllocs {
			met = "**no**"
		}
		fmt.Fprintf(w, "| %s | %d | %.3f | %g | %g | %s |\n", c.op, c.conc, ratio, doAllocs, rgAllocs, met)
	}
	fmt.Fprintln(w)
}

// writeAutoTargets checks, per cell, redisalive-auto against raw redigo
// and rueidis.
func (s *samples) writeAutoTargets(w io.Writer, cells []cell) {
	fmt.Fprintf(w, "Targets: redisalive-auto throughput >= %.2fx redigo at 1 goroutine; >= %.1fx redigo and >= rueidis at more; allocs/op <= redigo's.\n\n",
		minThroughputRatio, minAutoRatio)
	fmt.Fprintln(w, "| op | goroutines | auto/redigo ops/s | auto/rueidis ops/s | auto allocs/op | redigo allocs/op | met |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|")
	for _, c := range cells {
		autoOps, rgOps, ok1 := s.pair(c, "redisalive-auto", "redigo", "ops/s")
		_, ruOps, ok2 := s.pair(c, "redisalive-auto", "rueidis", "ops/s")
		autoAllocs, rgAllocs, ok3 := s.pair(c, "redisalive-auto", "redigo", "allocs/op")
		if !ok1 || !ok2 || !ok3 {
			continue
		}
		met := autoAllocs <= rgAllocs
		if c.conc == 1 {
			met = met && autoOps/rgOps >= minThroughputRatio
		} else {
			met = met && autoOps/rgOps >= minAutoRatio && autoOps >= ruOps
		}
		verdict := "yes"
		if !met {
			verdict = "**no**"
		}
		fmt.Fprintf(w, "| %s | %d | %.3f | %.3f | %g | %g | %s |\n", c.op, c.conc, autoOps/rgOps, autoOps/ruOps, autoAllocs, rgAllocs, verdict)
	}
	fmt.Fprintln(w)
}

// writeContendedTargets checks, per contended cell, redisalive-Do against
// raw redigo and, at contendedAutoConc goroutines, redisalive-auto against
// rueidis. A row needs the clients of every target it has.
func (s *samples) writeContendedTargets(w io.Writer, cells []cell) {
	fmt.Fprintf(w, "Contended targets (default pool sizes): redisalive-Do throughput >= %.2fx redigo, allocs/op <= redigo's; redisalive-auto throughput >= rueidis at %d goroutines.\n\n",
		minContendedRatio, contendedAutoConc)
	fmt.Fprintln(w, "| op | goroutines | Do/redigo ops/s | Do allocs/op | redigo allocs/op | auto/rueidis ops/s | met |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|")
	for _, c := range cells {
		doOps, rgOps, ok1 := s.pair(c, "redisalive-Do", "redigo", "ops/s")
		doAllocs, rgAllocs, ok2 := s.pair(c, "redisalive-Do", "redigo", "allocs/op")
		autoOps, ruOps, ok3 := s.pair(c, "redisalive-auto", "rueidis", "ops/s")
		autoJudged := c.conc == contendedAutoConc
		if !ok1 || !ok2 || autoJudged && !ok3 {
			continue
		}
		met := doOps/rgOps >= minContendedRatio && doAllocs <= rgAllocs
		if autoJudged {
			met = met && autoOps >= ruOps
		}
		autoRatio := "—"
		if ok3 {
			autoRatio = fmt.Sprintf("%.3f", autoOps/ruOps)
			if !autoJudged {
				autoRatio += " (not a target)"
			}
		}
		verdict := "yes"
		if !met {
			verdict = "**no**"
		}
		fmt.Fprintf(w, "| %s | %d | %.3f | %g | %g | %s | %s |\n", c.op, c.conc, doOps/rgOps, doAllocs, rgAllocs, autoRatio, verdict)
	}
	fmt.Fprintln(w)
}

// writeOther lists the remaining benchmarks with the median of each metric.
func (s *samples) writeOther(w io.Writer, names []string) {
	fmt.Fprintln(w, "| benchmark | metrics (medians) | runs |")
	fmt.Fprintln(w, "|---|---|---:|")
	for _, name := range names {
		var parts []string
		for _, unit := range s.units[name] {
			parts = append(parts, s.fmt(name, unit)+" "+unit)
		}
		fmt.Fprintf(w, "| %s | %s | %d |\n", strings.TrimPrefix(name, "Benchmark"), strings.Join(parts, ", "), s.runs(name))
	}
	fmt.Fprintln(w)
}

// fmt formats a median with precision to match its size.
func (s *samples) fmt(name, unit string) string {
	v, ok := s.median(name, unit)
	switch {
	case !ok:
		return "—"
	case v == 0 || v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}
