package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/headroom-rtc/headroom/internal/loadgen"
)

// corrResult is the correctness run: ceiling 100, 64 workers each holding
// up to perWorker sessions, first against Redis, then against the four
// agents (16 workers each), counted by the clients.
type corrResult struct {
	seed           uint64
	hold           time.Duration
	redis, agents  loadgen.Result
	admittedOver   uint64 // the aggregator's admitted_over_ceiling for the tenant
	settled        error  // the aggregator back at 0 open, or why not
	tenantJSON     string // GET /v1/tenants/c100 when admittedOver > 0
	overMetricLine string
}

func runCorrectness(ctx context.Context, cfg config, aggURL string, agents int,
	httpTarget func(i, conns int, tenant string) (*loadgen.AgentHTTP, error), rdb *redis.Client) (*corrResult, error) {
	seed := cfg.seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()) | 1
	}
	fmt.Fprintf(os.Stderr, "bench-compare: correctness: ceiling %d, 64 workers holding %d sessions each (mean hold %v, seed %d)\n", ceiling, perWorker, cfg.hold, seed)
	dur := time.Duration(cfg.seconds * float64(time.Second))
	co := loadgen.Options{Workers: 64, Sessions: perWorker, Duration: dur, Hold: cfg.hold, RefusedBackoff: 200 * time.Microsecond, Seed: seed, Prefix: "c"}
	r := &corrResult{seed: seed, hold: cfg.hold}
	var err error
	if r.redis, err = loadgen.Run(ctx, redisTarget{rdb, redis.NewScript(limiterLua), ceilingTenant, ceiling}, co); err != nil {
		return nil, fmt.Errorf("correctness, Redis: %w", err)
	}
	co.Workers = 64 / agents
	r.agents, err = runFleet(ctx, agents, func(i int) (loadgen.Target, func(), error) {
		t, err := httpTarget(i, co.Workers, ceilingTenant)
		if err != nil {
			return nil, nil, err
		}
		return t, t.CloseIdle, nil
	}, co)
	if err != nil {
		return nil, fmt.Errorf("correctness, agents: %w", err)
	}
	var tf struct {
		Concurrency struct {
			Total uint64 `json:"total"`
		} `json:"concurrency"`
		AdmittedOver uint64 `json:"admitted_over_ceiling"`
	}
	var body []byte
	r.settled = waitFor(30*time.Second, "the aggregator sees "+ceilingTenant+" back at 0 open", nil, func() error {
		code, b, err := call("GET", aggURL+"/v1/tenants/"+ceilingTenant, nil)
		if err != nil || code != 200 {
			return fmt.Errorf("%d %s %v", code, b, err)
		}
		body = b
		if err := json.Unmarshal(b, &tf); err != nil {
			return err
		}
		if tf.Concurrency.Total != 0 {
			return fmt.Errorf("%d open", tf.Concurrency.Total)
		}
		return nil
	})
	r.admittedOver = tf.AdmittedOver
	if r.admittedOver > 0 {
		r.tenantJSON = strings.TrimSpace(string(body))
		if _, m, err := call("GET", aggURL+"/metrics", nil); err == nil {
			for _, line := range strings.Split(string(m), "\n") {
				if strings.HasPrefix(line, "headroom_strict_admitted_over_ceiling_total") {
					r.overMetricLine = line
				}
			}
		}
	}
	return r, nil
}

func writeCorrectness(out io.Writer, r *corrResult) {
	fmt.Fprintf(out, "\ncorrectness: ceiling %d, 64 workers each holding up to %d sessions (mean hold %v), seed %d, most open at once as the clients counted:\n\n", ceiling, perWorker, r.hold, r.seed)
	fmt.Fprintf(out, "| limiter | ops | refused | most open at once | aggregator's admitted_over_ceiling |\n| --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(out, "| Redis | %d | %d | %d %s | — |\n", r.redis.Ops, r.redis.Refused, r.redis.MaxOpen, mark(r.redis.MaxOpen <= ceiling))
	fmt.Fprintf(out, "| 4 agents over HTTP, 16 workers each | %d | %d | %d %s | %d |\n", r.agents.Ops, r.agents.Refused, r.agents.MaxOpen, mark(r.agents.MaxOpen <= ceiling), r.admittedOver)
	if r.admittedOver > 0 {
		// Kept in the output for whoever looks into it: the clients never
		// counted more than the ceiling, the aggregator's counter moved.
		fmt.Fprintf(out, "\nnote: the aggregator counted %d admissions over the ceiling (%s); the tenant afterwards: %s\n", r.admittedOver, r.overMetricLine, r.tenantJSON)
	}
}

// verdict fails the run when either limiter passed the ceiling as the
// clients counted, admitted nothing, or the aggregator did not come back to
// 0 open.
func (r *corrResult) verdict() error {
	switch {
	case r.redis.MaxOpen > ceiling || r.agents.MaxOpen > ceiling:
		return fmt.Errorf("ceiling %d passed: Redis %d, agents %d open at once", ceiling, r.redis.MaxOpen, r.agents.MaxOpen)
	case r.agents.MaxOpen == 0 || r.redis.MaxOpen == 0:
		return fmt.Errorf("correctness run admitted nothing (Redis %d, agents %d)", r.redis.MaxOpen, r.agents.MaxOpen)
	}
	return r.settled
}
