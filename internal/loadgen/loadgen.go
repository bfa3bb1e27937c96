// Package loadgen drives an admission target (the agent's HTTP API, the
// agent's Go library, a Redis limiter) with N concurrent workers, each
// repeating one operation: admit a session, then close it. It measures the
// operations per second and the admit latency's percentiles, and counts, as
// the client sees them, the sessions open at once. It is shared by
// `headroom bench` and bench/compare; it imports nothing of headroom.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Target is what the workers drive. Admit and Close are called from many
// goroutines at once; a worker closes only sessions it was admitted, and
// never reuses a session id.
type Target interface {
	// Admit asks to open session. A refusal is admitted false with a nil
	// error; an error is a failure of the target (counted, and the run
	// stops after Options.MaxErrors of them).
	Admit(ctx context.Context, session string) (admitted bool, err error)
	// Close closes an admitted session.
	Close(ctx context.Context, session string) error
}

// Options of a run.
type Options struct {
	// Workers (required, ≥ 1) run at once.
	Workers int
	// Duration (required unless Ops is set) of the measured run.
	Duration time.Duration
	// Ops (optional): stop after this many admitted operations in all.
	Ops int64
	// Hold (optional, default 0): how long a worker holds an admitted
	// session before closing it, drawn uniformly from [0, 2·Hold).
	Hold time.Duration
	// Sessions (optional, default 1): how many sessions each worker keeps
	// open at once. A worker admits until it holds Sessions (or is
	// refused), then closes its oldest after a hold.
	Sessions int
	// RefusedBackoff (optional, default 0): how long a worker waits after a
	// refusal before asking again.
	RefusedBackoff time.Duration
	// MaxErrors (optional, default 10): the run stops with an error after
	// this many target errors.
	MaxErrors int64
	// Prefix (optional, default "lg"): session ids are Prefix-worker-seq.
	Prefix string
	// Progress (optional) is called about every ProgressEvery from its own
	// goroutine with the figures so far.
	Progress      func(Progress)
	ProgressEvery time.Duration
	// Seed (optional) seeds the hold times; 0 picks one at random. The
	// seed used is in the Result.
	Seed uint64
}

// Progress is a run's figures so far.
type Progress struct {
	Elapsed  time.Duration
	Ops      int64
	Refused  int64
	Errors   int64
	Open     int64 // sessions open now, as the client counts them
	LastRate float64
}

// Result of a run.
type Result struct {
	Workers int
	Elapsed time.Duration
	// Ops are completed operations: admitted and closed.
	Ops int64
	// Refused admissions (each retried; not in Ops).
	Refused int64
	Errors  int64
	// FirstError is the first target error, if any.
	FirstError error
	// Latency is of every admit call, admitted or refused.
	Latency *Histogram
	// MaxOpen is the most sessions open at once as the client counts them:
	// counted up when an admit's answer arrives, down before its close is
	// sent, so it never exceeds what the target really held open.
	MaxOpen int64
	Seed    uint64
}

// OpsPerSecond is Ops over Elapsed.
func (r Result) OpsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// ErrTooManyErrors ends a run whose target failed Options.MaxErrors times.
var ErrTooManyErrors = errors.New("loadgen: too many target errors")

// Validate checks the options.
func (o Options) Validate() error {
	switch {
	case o.Workers < 1:
		return fmt.Errorf("loadgen: workers %d: want at least 1", o.Workers)
	case o.Duration < 0, o.Ops < 0, o.Hold < 0, o.RefusedBackoff < 0, o.MaxErrors < 0, o.Sessions < 0:
		return fmt.Errorf("loadgen: negative duration, ops, sessions, hold, backoff or max errors")
	case o.Duration == 0 && o.Ops == 0:
		return fmt.Errorf("loadgen: give a duration or a number of operations")
	}
	return nil
}

// Run drives target until the duration passes, Ops operations are done,
// ctx ends or too many errors happened. Sessions a worker holds when the run
// ends are closed before Run returns. The error is ErrTooManyErrors (with
// the first error) or ctx's; the Result holds the figures either way.
func Run(ctx context.Context, target Target, o Options) (Result, error) {
	if err := o.Validate(); err != nil {
		return Result{}, err
	}
	if o.MaxErrors == 0 {
		o.MaxErrors = 10
	}
	if o.Sessions == 0 {
		o.Sessions = 1
	}
	if o.Prefix == "" {
		o.Prefix = "lg"
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64() | 1
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = time.Second
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.Duration > 0 {
		var c2 context.CancelFunc
		runCtx, c2 = context.WithTimeout(runCtx, o.Duration)
		defer c2()
	}
	var (
		ops, refused, errs, open, maxOpen atomic.Int64
		firstErr                          error
		errOnce                           sync.Once
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		if errs.Add(1) >= o.MaxErrors {
			cancel()
		}
	}
	hists := make([]*Histogram, o.Workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range o.Workers {
		h := NewHistogram()
		hists[w] = h
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(o.Seed, uint64(w)))
			prefix := o.Prefix + "-" + strconv.Itoa(w) + "-"
			buf := make([]byte, 0, len(prefix)+20)
			var held []string // oldest first
			closeOldest := func() {
				if len(held) == 0 {
					return
				}
				if o.Hold > 0 {
					sleep(runCtx, time.Duration(rng.Int64N(int64(2*o.Hold))))
				}
				id := held[0]
				held = held[1:]
				open.Add(-1)
				// The close goes out even when the run has ended: a
				// worker leaves nothing open behind it.
				if err := target.Close(context.WithoutCancel(runCtx), id); err != nil {
					fail(fmt.Errorf("close %s: %w", id, err))
					return
				}
				ops.Add(1)
			}
			defer func() {
				for len(held) > 0 {
					closeOldest()
				}
			}()
			for seq := 0; runCtx.Err() == nil; seq++ {
				if o.Ops > 0 && ops.Load() >= o.Ops {
					cancel()
					return
				}
				buf = strconv.AppendInt(append(buf[:0], prefix...), int64(seq), 10)
				id := string(buf)
				t0 := time.Now()
				// An admission under way when the run ends is answered,
				// so that nothing admitted is left open behind the run.
				ok, err := target.Admit(context.WithoutCancel(runCtx), id)
				h.Record(time.Since(t0))
				switch {
				case err != nil:
					fail(fmt.Errorf("admit %s: %w", id, err))
				case !ok:
					refused.Add(1)
					if len(held) > 0 {
						closeOldest()
					} else if o.RefusedBackoff > 0 {
						sleep(runCtx, o.RefusedBackoff)
					}
				default:
					n := open.Add(1)
					for m := maxOpen.Load(); n > m && !maxOpen.CompareAndSwap(m, n); m = maxOpen.Load() {
					}
					held = append(held, id)
					if len(held) >= o.Sessions {
						closeOldest()
					}
				}
			}
		}()
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if o.Progress == nil {
			return
		}
		t := time.NewTicker(o.ProgressEvery)
		defer t.Stop()
		last, lastAt := int64(0), start
		for {
			select {
			case <-stopProgress:
				return
			case now := <-t.C:
				n := ops.Load()
				o.Progress(Progress{Elapsed: now.Sub(start), Ops: n, Refused: refused.Load(), Errors: errs.Load(),
					Open: open.Load(), LastRate: float64(n-last) / now.Sub(lastAt).Seconds()})
				last, lastAt = n, now
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	close(stopProgress)
	<-progressDone
	all := NewHistogram()
	for _, h := range hists {
		all.Merge(h)
	}
	res := Result{Workers: o.Workers, Elapsed: elapsed, Ops: ops.Load(), Refused: refused.Load(), Errors: errs.Load(),
		FirstError: firstErr, Latency: all, MaxOpen: maxOpen.Load(), Seed: o.Seed}
	if res.Errors >= o.MaxErrors {
		return res, fmt.Errorf("%w (%d): first: %v", ErrTooManyErrors, res.Errors, firstErr)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	return res, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
