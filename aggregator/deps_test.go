package aggregator

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The arrows of the aggregator's rooms (DESIGN.md, Layout), in the way of
// tailscale's depaware: which packages of this module each package may
// import, directly or not. The state machine imports only wire and plans;
// the stream server and the API import the state machine, never each other
// nor the server that wires them; nothing under aggregator/ imports agent/
// or cmd/; wire and plans import nothing of ours.
const module = "github.com/headroom-rtc/headroom/"

// allowedDeps maps a package to the packages of ours it may depend on; a
// package under aggregator/ not listed is refused.
var allowedDeps = map[string][]string{
	"wire":              {},
	"plans":             {},
	"aggregator/fsm":    {"wire", "plans"},
	"aggregator/web":    {"internal/jsonhttp"},
	"aggregator/stream": {"wire", "plans", "aggregator/fsm", "internal/loop"},
	"aggregator/api":    {"wire", "plans", "cluster", "aggregator/fsm", "aggregator/web", "internal/jsonhttp", "internal/loop"},
	"aggregator": {"wire", "plans", "cluster", "aggregator/fsm", "aggregator/stream", "aggregator/api", "aggregator/web",
		"internal/jsonhttp", "internal/loop", "internal/atomicfile"},
}

// badDeps returns the dependencies of pkg (paths inside the module) that
// the rules refuse, each with the reason.
func badDeps(pkg string, deps []string) []string {
	allowed, listed := allowedDeps[pkg]
	var bad []string
	for _, d := range deps {
		switch {
		case d == pkg:
		case strings.HasPrefix(pkg, "aggregator") && (d == "agent" || strings.HasPrefix(d, "agent/") || d == "cmd" || strings.HasPrefix(d, "cmd/")):
			bad = append(bad, d+" (nothing under aggregator/ imports agent/ or cmd/)")
		case !listed:
			bad = append(bad, d+" ("+pkg+" has no rule: add it to allowedDeps)")
		default:
			ok := false
			for _, a := range allowed {
				ok = ok || a == d
			}
			if !ok {
				bad = append(bad, d+" (not an arrow of "+pkg+": "+strings.Join(allowed, ", ")+")")
			}
		}
	}
	return bad
}

// TestDependencyArrows checks every package under aggregator/, and wire and
// plans, against allowedDeps with go list -deps.
func TestDependencyArrows(t *testing.T) {
	out, err := exec.Command("go", "list", "../wire", "../plans", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 5 {
		t.Fatalf("only %d packages: %v", len(pkgs), pkgs)
	}
	for _, p := range pkgs {
		name := strings.TrimPrefix(p, module)
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", p).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", p, err, out)
		}
		var ours []string
		for _, d := range strings.Fields(string(out)) {
			if strings.HasPrefix(d, module) {
				ours = append(ours, strings.TrimPrefix(d, module))
			}
		}
		for _, b := range badDeps(name, ours) {
			t.Errorf("%s depends on %s", name, b)
		}
	}
}

// TestDependencyRules: the rules refuse a wrong arrow, so that a new one
// fails TestDependencyArrows.
func TestDependencyRules(t *testing.T) {
	for _, c := range []struct {
		pkg  string
		deps []string
		bad  bool
	}{
		{"aggregator/fsm", []string{"aggregator/fsm", "wire", "plans"}, false},
		{"aggregator/fsm", []string{"wire", "cluster"}, true},   // the state machine near Raft's sockets
		{"aggregator/fsm", []string{"internal/jsonhttp"}, true}, // or HTTP
		{"aggregator/stream", []string{"aggregator/api"}, true}, // a sibling
		{"aggregator/api", []string{"aggregator/stream"}, true}, // the other way
		{"aggregator/api", []string{"aggregator"}, true},        // back up to the server
		{"aggregator", []string{"agent"}, true},                 // the agent
		{"aggregator/api", []string{"cmd/headroom"}, true},      // the binary
		{"aggregator/new", []string{"wire"}, true},              // a room without a rule
		{"wire", []string{"plans"}, true},                       // wire imports nothing of ours
		{"plans", []string{"wire"}, true},                       // nor does plans
		{"aggregator", []string{"aggregator/api", "cluster", "wire"}, false},
	} {
		if got := len(badDeps(c.pkg, c.deps)) > 0; got != c.bad {
			t.Errorf("%s → %v: refused %v, want %v", c.pkg, c.deps, got, c.bad)
		}
	}
}

// stateReach finds, in Go source, what reaches past fsm.View into the state
// itself: the State type, or a view made of one.
var stateReach = regexp.MustCompile(`\bfsm\.(State|ViewOf|NewState)\b`)

// TestReadersSeeOnlyTheView: the servers around the state machine (the
// root, the stream server, the API) read the state through fsm.Reader's
// View, never through *fsm.State and its maps; only tests may hold the
// state itself.
func TestReadersSeeOnlyTheView(t *testing.T) {
	for _, dir := range []string{".", "stream", "api", "web"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for i, line := range strings.Split(string(b), "\n") {
				if code, _, _ := strings.Cut(line, "//"); stateReach.MatchString(code) {
					t.Errorf("%s:%d reaches the state past fsm.View: %s", f, i+1, strings.TrimSpace(line))
				}
			}
		}
	}
	// The rule itself catches what it is meant to.
	for _, bad := range []string{"func f(st *fsm.State) {}", "v := fsm.ViewOf(s)"} {
		if !stateReach.MatchString(bad) {
			t.Errorf("the rule misses %q", bad)
		}
	}
	if stateReach.MatchString("fsm.Read(func(st fsm.View) {})") {
		t.Error("the rule refuses a read through the view")
	}
}
