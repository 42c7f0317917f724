package redisalive

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// optionsDoc is the page whose tables TestTheOptionsDocMatchesTheCode
// holds to the code.
const optionsDoc = "docs/options.md"

// TestTheOptionsDocMatchesTheCode: the options table has a row for every
// field of Options (KeepAlive's one by one) and no other, and the default
// in each row's first code span is what Pool.Options of a zero Options
// gives; each example warning is what its example setting makes NewPool
// log. The doc is the code's, so a change to either fails here until the
// other follows.
func TestTheOptionsDocMatchesTheCode(t *testing.T) {
	doc, err := os.ReadFile(optionsDoc)
	require.NoError(t, err)
	tables := markdownTables(string(doc))

	options := tableWithHeader(t, tables, "Option")
	defaults := defaultOptions(t, Options{})
	// The pipeline's settings have defaults only with AutoPipeline.
	piped := defaultOptions(t, Options{AutoPipeline: true})
	var documented []string
	for _, row := range options {
		names := codeSpans(row[0])
		require.NotEmpty(t, names, "row %q names no option", row)
		for _, name := range names {
			documented = append(documented, name)
			from := defaults
			if name == "PipelineConns" || name == "PipelineDepth" {
				from = piped
			}
			field := fieldByPath(from, name)
			if !field.IsValid() {
				t.Errorf("%s: row for %s, which is no field of Options", optionsDoc, name)
				continue
			}
			spans := codeSpans(row[1])
			if len(spans) == 0 {
				assert.Equal(t, "Addr", name, "%s: only Addr has no default", optionsDoc)
				assert.Equal(t, "required", row[1], "%s: Addr's default", optionsDoc)
				continue
			}
			want, err := evalDefault(spans[0], from, field.Type())
			if err != nil {
				t.Errorf("%s: %s: default `%s`: %v", optionsDoc, name, spans[0], err)
				continue
			}
			if got := field.Interface(); !reflect.DeepEqual(got, want) {
				t.Errorf("%s: %s: the doc's default `%s` is %v, the code's is %v", optionsDoc, name, spans[0], want, got)
			}
		}
	}
	var fields []string
	for name := range optionFields(reflect.TypeFor[Options](), "") {
		fields = append(fields, name)
	}
	slices.Sort(fields)
	slices.Sort(documented)
	assert.Equal(t, fields, documented, "%s: got rows for these options, want one for each field of Options", optionsDoc)

	warnings := tableWithHeader(t, tables, "Setting")
	require.NotEmpty(t, warnings)
	for _, row := range warnings {
		require.Len(t, row, 4, "warning row %q: want setting, when, example setting, example message", row)
		setting, message := codeSpans(row[2]), codeSpans(row[3])
		require.Len(t, setting, 1, "warning row %q: want one example setting", row)
		require.NotEmpty(t, message, "warning row %q: want an example message", row)
		if !userTimeoutApplies && strings.Contains(setting[0]+message[0], "TCPUserTimeout") {
			continue // Linux's: elsewhere the message differs, as the doc says
		}
		o, err := parseSetting(setting[0])
		require.NoError(t, err, "warning row %q", row)
		o.Addr = "h:1"
		c, err := newConfig(o)
		require.NoError(t, err, "example setting `%s`", setting[0])
		var logged []string
		for _, w := range c.warnings() {
			logged = append(logged, "redisalive: "+w)
		}
		assert.Contains(t, logged, message[0], "%s: example setting `%s`: got warnings %q", optionsDoc, setting[0], logged)
	}
}

// TestADefaultMaxActiveIsRaisedToAnExplicitMaxIdle: what the options
// doc says of MaxActive's default beyond its formula.
func TestADefaultMaxActiveIsRaisedToAnExplicitMaxIdle(t *testing.T) {
	o := defaultOptions(t, Options{MaxIdle: 1000})
	assert.Equal(t, 1000, o.MaxActive, "MaxActive with MaxIdle 1000: got %d, want 1000", o.MaxActive)
	_, err := newConfig(Options{Addr: "h:1", MaxIdle: 1000, MaxActive: 10})
	assert.ErrorIs(t, err, ErrInvalidOptions, "an explicit MaxActive below MaxIdle")
}

// TestTheDocsLinksLeadSomewhere: every relative link in the README and
// docs/ names a file that exists and, with a #fragment, a heading in it.
func TestTheDocsLinksLeadSomewhere(t *testing.T) {
	pages, err := filepath.Glob("docs/*.md")
	require.NoError(t, err)
	pages = append(pages, "README.md", "BENCHMARKS.md")
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, page := range pages {
		text, err := os.ReadFile(page)
		require.NoError(t, err)
		for _, m := range link.FindAllStringSubmatch(string(text), -1) {
			target := m[1]
			if strings.Contains(target, "://") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			path := page
			if file != "" {
				path = filepath.Join(filepath.Dir(page), file)
			}
			body, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%s: link %q: %v", page, target, err)
				continue
			}
			if anchor != "" && !slices.Contains(headingAnchors(string(body)), anchor) {
				t.Errorf("%s: link %q: no heading #%s in %s (headings: %v)", page, target, anchor, path, headingAnchors(string(body)))
			}
		}
	}
}

// headingAnchors returns the anchors GitHub gives the headings of a
// markdown page: lower case, spaces as hyphens, punctuation dropped.
func headingAnchors(md string) []string {
	var anchors []string
	inCode := false
	for line := range strings.Lines(md) {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || r > 127:
				b.WriteRune(r)
			}
		}
		anchors = append(anchors, b.String())
	}
	return anchors
}

// defaultOptions returns what Pool.Options gives for o.
func defaultOptions(t *testing.T, o Options) Options {
	t.Helper()
	o.Addr = "127.0.0.1:6379"
	p := openPool(t, o)
	return p.Options()
}

// markdownTables returns the tables of a markdown page, each a list of
// rows of trimmed cells, the header row first and the rule row left out.
func markdownTables(md string) [][][]string {
	var tables [][][]string
	var cur [][]string
	for line := range strings.Lines(md) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			if cur != nil {
				tables, cur = append(tables, cur), nil
			}
			continue
		}
		cells := splitRow(line)
		if strings.Trim(strings.Join(cells, ""), "-: ") == "" {
			continue // the rule under the header
		}
		cur = append(cur, cells)
	}
	if cur != nil {
		tables = append(tables, cur)
	}
	return tables
}

// splitRow splits a table row into its cells; a '|' inside a code span
// does not split.
func splitRow(line string) []string {
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	var cells []string
	var cell strings.Builder
	inCode := false
	for _, r := range line {
		switch {
		case r == '`':
			inCode = !inCode
		case r == '|' && !inCode:
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
			continue
		}
		cell.WriteRune(r)
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

// tableWithHeader returns the body of the table whose first header cell
// is first.
func tableWithHeader(t *testing.T, tables [][][]string, first string) [][]string {
	t.Helper()
	for _, tb := range tables {
		if tb[0][0] == first {
			return tb[1:]
		}
	}
	t.Fatalf("%s: no table headed %q", optionsDoc, first)
	return nil
}

var codeSpan = regexp.MustCompile("`([^`]*)`")

// codeSpans returns the text of each code span of s.
func codeSpans(s string) []string {
	var spans []string
	for _, m := range codeSpan.FindAllStringSubmatch(s, -1) {
		spans = append(spans, m[1])
	}
	return spans
}

// optionFields yields the documented names of the fields of t: a struct
// field's own fields by their dotted path.
func optionFields(t reflect.Type, prefix string) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			if f.Type.Kind() == reflect.Struct {
				for name := range optionFields(f.Type, prefix+f.Name+".") {
					if !yield(name) {
						return
					}
				}
				continue
			}
			if !yield(prefix + f.Name) {
				return
			}
		}
	}
}

// fieldByPath returns the field of o named by a dotted path, or an
// invalid Value.
func fieldByPath(o Options, path string) reflect.Value {
	v := reflect.ValueOf(o)
	for name := range strings.SplitSeq(path, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}
		}
		v = v.FieldByName(name)
		if !v.IsValid() {
			return v
		}
	}
	return v
}

// evalDefault evaluates a default as the doc writes it, into a value of
// type typ: a Go literal ("tcp" quoted, nil, false, 5s, 3), slog.Default(),
// or a sum of products of such numbers, fields of o and GOMAXPROCS, as in
// "ReadTimeout + 1s" or "10 × GOMAXPROCS".
func evalDefault(expr string, o Options, typ reflect.Type) (any, error) {
	switch {
	case expr == "nil":
		return reflect.Zero(typ).Interface(), nil
	case expr == "slog.Default()":
		return slog.Default(), nil
	case typ.Kind() == reflect.String:
		s, err := strconv.Unquote(expr)
		return s, err
	case typ.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(expr)
		return b, err
	}
	var sum int64
	for term := range strings.SplitSeq(expr, "+") {
		product := int64(1)
		for factor := range strings.SplitSeq(term, "×") {
			n, err := evalFactor(strings.TrimSpace(factor), o)
			if err != nil {
				return nil, err
			}
			product *= n
		}
		sum += product
	}
	return reflect.ValueOf(sum).Convert(typ).Interface(), nil
}

// evalFactor reads a number, a duration, GOMAXPROCS or a numeric field of
// o, as an int64 (a duration in nanoseconds).
func evalFactor(s string, o Options) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return int64(d), nil
	}
	if s == "GOMAXPROCS" {
		return int64(runtime.GOMAXPROCS(0)), nil
	}
	if f := fieldByPath(o, s); f.IsValid() && f.CanInt() {
		return f.Int(), nil
	}
	return 0, fmt.Errorf("%q is no number, duration, GOMAXPROCS or numeric field of Options", s)
}

// parseSetting reads an example setting as the doc writes it, "Field:
// value, Field.Sub: value", into Options: durations as 1h or 5m, whole
// numbers, true or false.
func parseSetting(s string) (Options, error) {
	var o Options
	for assignment := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(assignment, ":")
		if !ok {
			return o, fmt.Errorf("setting %q: want Field: value", assignment)
		}
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		f := reflect.ValueOf(&o).Elem()
		for part := range strings.SplitSeq(name, ".") {
			f = f.FieldByName(part)
			if !f.IsValid() {
				return o, fmt.Errorf("setting %q: no field %s", assignment, name)
			}
		}
		switch {
		case f.Type() == reflect.TypeFor[time.Duration]():
			d, err := time.ParseDuration(val)
			if err != nil {
				return o, err
			}
			f.SetInt(int64(d))
		case f.Kind() == reflect.Bool:
			b, err := strconv.ParseBool(val)
			if err != nil {
				return o, err
			}
			f.SetBool(b)
		case f.CanInt():
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return o, err
			}
			f.SetInt(n)
		default:
			return o, fmt.Errorf("setting %q: cannot set a %v", assignment, f.Type())
		}
	}
	return o, nil
}
