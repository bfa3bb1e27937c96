package aggregator

import (
	"strings"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/plans"
)

func TestPlansFileCreatesMissingPlansOnly(t *testing.T) {
	gold := plans.Plan{Name: "gold", FeeMonthly: 5_000_000_000, Ceiling: 5000, Mode: plans.Strict}
	payg := plans.Defaults()[1]
	if payg.Name != "payg" {
		t.Fatalf("defaults changed order: %s", payg.Name)
	}
	payg.Ceiling = 5 // differs from the catalogue's: must not overwrite it
	s := newTestServer(t, &fakeClock{t: t0}, func(c *Config) { c.Plans = []plans.Plan{gold, payg} })
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got map[string]plans.Plan
		s.fsm.Read(func(st fsm.View) {
			gold, _ := st.Plan("gold")
			payg, _ := st.Plan("payg")
			got = map[string]plans.Plan{"gold": gold, "payg": payg}
		})
		if got["gold"].Name == "gold" {
			if got["payg"].Ceiling != 1000 {
				t.Fatalf("payg overwritten from the file: ceiling %d", got["payg"].Ceiling)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("plan from the file never created")
		}
		time.Sleep(20 * time.Millisecond)
	}
	bad := gold
	bad.Mode = "hard"
	if _, err := New(Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", WireAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", Plans: []plans.Plan{bad}}); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Fatalf("invalid plan in the file: %v", err)
	}
}
