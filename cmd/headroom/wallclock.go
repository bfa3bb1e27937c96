package main

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"
)

// The agent's fake wall clock, for the fault tests (nemesis_test.go): with
// --wall-clock-offset-file F the agent's wall clock is the system's plus the
// duration written in F (e.g. "-10m"), read again every 50 ms, so a test
// jumps the clock of one agent without touching the host's.

var wallClockFlag = &cli.StringFlag{Name: "wall-clock-offset-file", Hidden: true,
	Usage: "tests only: the agent's wall clock is the system's plus the duration in this file, read every 50 ms"}

// offsetClock returns the wall clock that follows the offset in path until
// ctx ends; nil when path is empty.
func offsetClock(ctx context.Context, path string) func() time.Time {
	if path == "" {
		return nil
	}
	var off atomic.Int64
	read := func() {
		if b, err := os.ReadFile(path); err == nil {
			if d, err := time.ParseDuration(strings.TrimSpace(string(b))); err == nil {
				off.Store(int64(d))
			}
		}
	}
	read()
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() time.Time { return time.Now().Add(time.Duration(off.Load())).Round(0) }
}
