package plans

import (
	"testing"
	"time"
)

// Invoices carry device lines: a package counts a device minute as its
// device_weight unit-minutes; pay-as-you-go bills devices at their rate.
func TestBillDeviceLines(t *testing.T) {
	p := PeriodOf(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	from, to := p.Start(), p.End()
	usage := []UsageSlice{{At: from.Add(time.Hour), Class: Device, Micros: 1000 * microsPerMinute}}
	pkg := Plan{Name: "fleet", FeeMonthly: 0, Ceiling: 100, Mode: Strict, IncludedUnitMinutes: 500, OveragePer1000: 1_000_000, DeviceWeight: 3}.Normalized()
	inv, err := Bill(p, []Holding{{Plan: pkg, From: from, To: to}}, usage)
	if err != nil {
		t.Fatal(err)
	}
	var over *Line
	for i := range inv.Lines {
		if inv.Lines[i].Kind == LineOverage && inv.Lines[i].Class == "device" {
			over = &inv.Lines[i]
		}
	}
	// 1,000 device minutes × 3 = 3,000 unit-minutes, 500 included.
	if over == nil || over.Quantity != 2500 || over.Amount != 2_500_000 {
		t.Fatalf("package invoice %+v, want a device overage line of 2,500 unit-minutes", inv.Lines)
	}
	payg := Plan{Name: "payg", Billing: PayAsYouGo, Mode: Meter}.Normalized()
	inv, err = Bill(p, []Holding{{Plan: payg, From: from, To: to}}, usage)
	if err != nil {
		t.Fatal(err)
	}
	var line *Line
	for i := range inv.Lines {
		if inv.Lines[i].Kind == LineUsage && inv.Lines[i].Class == "device" {
			line = &inv.Lines[i]
		}
	}
	if line == nil || line.Quantity != 1000 || line.Amount != 990_000 {
		t.Fatalf("pay-as-you-go invoice %+v, want a device usage line of 1,000 minutes at 0.99", inv.Lines)
	}
}
