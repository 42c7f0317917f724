package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// level is how much a finding matters; only FAIL changes the exit status.
type level string

const (
	levelOK   level = "OK"
	levelInfo level = "INFO" // a fact worth knowing, nothing wrong
	levelWarn level = "WARN" // bites in some failure, or could not be checked
	levelFail level = "FAIL" // bites
)

// finding is one line of the doctor's answer. Why and Fix are phrases
// without a final period; the text output adds the punctuation.
type finding struct {
	Check string `json:"check"` // stable id, such as server.tcp-keepalive
	Level level  `json:"level"`
	Value string `json:"value"` // the setting or measurement, as text
	Why   string `json:"why"`   // what it means
	Fix   string `json:"fix"`   // what to change; "" when nothing needs to
}

// report is everything a run prints: the -json document, and the findings
// and summary of the text output.
type report struct {
	Findings []finding `json:"findings"`
	Exit     int       `json:"exit"`
	Error    string    `json:"error,omitempty"` // why there are no findings, with exit 2
}

// exitStatus is 1 if any finding FAILs: WARN and INFO never fail a
// deployment check that runs the doctor.
func exitStatus(findings []finding) int {
	for _, f := range findings {
		if f.Level == levelFail {
			return exitFail
		}
	}
	return exitOK
}

// writeText prints one line per finding, its level and check aligned, then
// a summary line. A report with an error prints nothing: the error goes to
// stderr.
func writeText(w io.Writer, r report) {
	if r.Error != "" {
		return
	}
	width := 0
	counts := map[level]int{}
	for _, f := range r.Findings {
		width = max(width, len(f.Check))
		counts[f.Level]++
	}
	for _, f := range r.Findings {
		line := fmt.Sprintf("%-4s  %-*s  %s: %s.", f.Level, width, f.Check, f.Value, f.Why)
		if f.Fix != "" {
			line += " Fix: " + f.Fix + "."
		}
		fmt.Fprintln(w, line)
	}
	var summary []string
	for _, l := range []level{levelFail, levelWarn, levelOK, levelInfo} {
		summary = append(summary, fmt.Sprintf("%d %s", counts[l], l))
	}
	fmt.Fprintf(w, "%s: exit %d\n", strings.Join(summary, ", "), r.Exit)
}

// writeJSON prints r as one JSON document, in the shape the command's doc
// describes.
func writeJSON(w io.Writer, r report) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // "<" and ">" stay readable in why and fix
	enc.SetIndent("", "  ")
	_ = enc.Encode(r) // a report always encodes; a broken stdout has no one to tell
}
