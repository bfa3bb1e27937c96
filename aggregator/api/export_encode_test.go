package api

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"
	"github.com/headroom-rtc/headroom/internal/exporttest"
)

// TestExportEventShape: one event as the SDK reads it, every field.
func TestExportEventShape(t *testing.T) {
	st := &fsm.ExportState{Seq: 42, To: time.Date(2026, 12, 1, 10, 5, 0, 213_000, time.UTC).UnixNano(), Source: "headroom/abc"}
	rec := &fsm.ExportRecord{ExportRef: fsm.ExportRef{Tenant: `ac"me/1`, Period: "2026-12", Region: "eu west"}}
	b := appendEvent(nil, st, rec, fsm.ClassIndex("video-fhd"), 61_250_000)
	var ev map[string]any
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	want := map[string]any{
		"specversion": "1.0", "type": "headroom.usage", "source": "headroom/abc",
		"id":   "42.1796119500000213000/ac%22me%2F1/2026-12/eu%20west/video-fhd",
		"time": "2026-12-01T10:05:00.000213Z", "subject": `ac"me/1`, "datacontenttype": "application/json",
		"data": map[string]any{"class": "video-fhd", "seconds": 61.25, "unit_minutes": 9.1875, "region": "eu west", "period": "2026-12"},
	}
	if !reflect.DeepEqual(ev, want) {
		t.Fatalf("event\n%s\nwant %v", b, want)
	}
	for micros, s := range map[uint64]string{0: "0", 7: "0.000007", 1_000_000: "1", 1_500_000: "1.5", 123_456_789: "123.456789"} {
		if got := string(appendMicros(nil, micros)); got != s {
			t.Errorf("%d µs: %q, want %q", micros, got, s)
		}
		if back, err := exporttest.Micros(json.Number(s)); err != nil || back != micros {
			t.Errorf("%q read back as %d %v", s, back, err)
		}
	}
}
