// Command redisalive-doctor tells an operator which settings of a Redis
// server, of this machine's kernel and of a redisalive pool will let a dead,
// half-open or forgotten connection bite, one finding a line:
//
//	go run github.com/redisalive/redisalive/cmd/redisalive-doctor -url redis://host:6379
//	REDIS_URL=redis://:secret@host:6379 redisalive-doctor -json
//
// The URL is read as redisalive.ParseURL reads it, so its query options
// (dial_timeout, read_timeout, health_check_interval, ...) shape the pool
// the doctor talks through and reports on. Each finding has a level: OK,
// INFO (a fact worth knowing, nothing wrong), WARN (bites in some failure,
// or could not be checked) or FAIL (bites: a zombie consumer taking items,
// a server about to refuse connections).
//
// Exit status: 0 when nothing FAILs, 1 when something does, 2 when the
// input is bad or the server does not answer PING within the URL's
// dial_timeout (5 s by default).
//
// With -json the same findings are printed as one JSON document, whose
// shape is stable:
//
//	{"findings":[{"check":"server.tcp-keepalive","level":"FAIL","value":"0 (off)","why":"...","fix":"..."}],"exit":1}
//
// check is a stable id (server.*, clients.*, kernel.*, pool.*; pool.warnings
// may appear more than once), level one of OK, INFO, WARN or FAIL, value the
// setting or measurement as text, why what it means, fix what to change (""
// when nothing needs to), and exit the exit status. With exit 2, findings is
// empty and error says why.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redisalive/redisalive"
)

// Exit statuses.
const (
	exitOK       = 0
	exitFail     = 1
	exitUnusable = 2 // bad input, or no server to examine
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], system{getenv: os.Getenv, root: os.DirFS("/"), stdout: os.Stdout, stderr: os.Stderr})
	stop()
	os.Exit(code)
}

// system is what a run reads and writes besides the server; tests replace
// it, so that neither the environment nor this machine's kernel settings
// decide their outcome.
type system struct {
	getenv         func(string) string
	root           fs.FS // the machine's file system, for /proc/sys
	stdout, stderr io.Writer
}

// run is the whole command: it parses args, examines the server, prints the
// findings and returns the exit status.
func run(ctx context.Context, args []string, sys system) int {
	flags := flag.NewFlagSet("redisalive-doctor", flag.ContinueOnError)
	flags.SetOutput(sys.stderr)
	rawURL := flags.String("url", "", "the server's `URL`, as redisalive.ParseURL reads it (default $REDIS_URL)")
	asJSON := flags.Bool("json", false, "print the findings as one JSON document")
	flags.Usage = func() {
		fmt.Fprintln(flags.Output(), "usage: redisalive-doctor [-json] [-url redis://host:6379]")
		flags.PrintDefaults()
	}
	err := flags.Parse(args) // prints its own errors, with the usage
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	write := writeText
	if *asJSON {
		write = writeJSON
	}
	var findings []finding
	if err == nil {
		findings, err = diagnose(ctx, cmp.Or(*rawURL, sys.getenv("REDIS_URL")), flags.Args(), sys.root)
		if err != nil {
			fmt.Fprintf(sys.stderr, "redisalive-doctor: %v\n", err)
		}
	}
	if err != nil {
		write(sys.stdout, report{Findings: []finding{}, Exit: exitUnusable, Error: err.Error()})
		return exitUnusable
	}
	r := report{Findings: findings, Exit: exitStatus(findings)}
	write(sys.stdout, r)
	return r.Exit
}

// diagnose examines the server at rawURL through a pool made from it, and
// this machine's kernel under root. An error means there was nothing to
// examine: bad input, or a server that did not answer.
func diagnose(ctx context.Context, rawURL string, extra []string, root fs.FS) ([]finding, error) {
	switch {
	case len(extra) > 0:
		return nil, fmt.Errorf("unexpected arguments %q: give the server as -url redis://host:6379", extra)
	case rawURL == "":
		return nil, errors.New("no server: pass -url redis://host:6379 or set REDIS_URL")
	}
	opts, err := redisalive.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	// NewPool reports settings that let a dead connection go unnoticed
	// only through its Logger.
	warnings := &warningLog{}
	opts.Logger = slog.New(warnings)
	p, err := redisalive.NewPool(opts)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	poolWarnings := warnings.messages()

	opts = p.Options()
	srv := server{p: p, timeout: p.Bounds().Command}
	if err := srv.reach(ctx, opts); err != nil {
		return nil, err
	}
	facts := srv.read(ctx)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("interrupted: %w", err)
	}
	findings := serverFindings(facts, opts)
	findings = append(findings, kernelFindings(root)...)
	return append(findings, poolFindings(opts, p.Bounds(), poolWarnings)...), nil
}
