// Package loop runs the aggregator's periodic duties. It imports nothing of
// ours.
package loop

import (
	"context"
	"time"
)

// Every calls fn every d until ctx ends; fn runs on the caller's goroutine,
// one call at a time.
func Every(ctx context.Context, d time.Duration, fn func()) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			fn()
		}
	}
}
