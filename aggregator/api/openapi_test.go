package api

import (
	"encoding/json"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestOpenAPIMatchesRoutes fails when a route is registered without being
// documented in apiOps, or documented without being registered. The routes
// are found twice: every Handle/HandleFunc call in the package's source,
// and the running server's mux, which must route a request for each of
// them, and for each documented operation, to exactly that pattern.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	registered := sourceRoutes(t)
	if len(registered) < 20 {
		t.Fatalf("found only %d route registrations in the source: %v", len(registered), registered)
	}
	mux := raftAPI(t).Handler().(*apiHandler).mux

	documented := map[string]bool{}
	for _, op := range apiOps {
		key := op.method + " " + op.path
		if documented[key] {
			t.Errorf("%s documented twice", key)
		}
		documented[key] = true
	}
	for _, pattern := range registered {
		key := docKey(pattern)
		if got := routedPattern(t, mux, pattern); got != pattern {
			t.Errorf("%s is in the source but the server routes a request for it to %q: dead code, or shadowed", pattern, got)
		}
		if !documented[key] {
			t.Errorf("route %s is registered but not in the OpenAPI document (add it to apiOps as %q)", pattern, key)
		}
		delete(documented, key)
	}
	for key := range documented {
		t.Errorf("%s is in the OpenAPI document but no route serves it", key)
	}
	// Every documented operation reaches its own pattern on the real mux.
	for _, op := range apiOps {
		method, path := op.method, examplePath(op.path)
		_, pattern := mux.Handler(httptest.NewRequest(method, path, nil))
		if docKey(pattern) != op.method+" "+op.path {
			t.Errorf("%s %s: the server routes %s to %q", op.method, op.path, path, pattern)
		}
	}
}

// docKey turns a mux pattern into the document's method and path: {$}
// dropped, {name...} as {name}.
func docKey(pattern string) string {
	return strings.ReplaceAll(strings.TrimSuffix(pattern, "{$}"), "...}", "}")
}

var wildcard = regexp.MustCompile(`\{[^}]*\}`)

// examplePath is a request path a pattern's path matches.
func examplePath(path string) string {
	return wildcard.ReplaceAllString(strings.TrimSuffix(path, "{$}"), "x1")
}

// routedPattern is the pattern the mux picks for a request matching pattern.
func routedPattern(t *testing.T, mux *http.ServeMux, pattern string) string {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		t.Fatalf("route %q has no method: every route names one", pattern)
	}
	_, got := mux.Handler(httptest.NewRequest(method, examplePath(path), nil))
	return got
}

// sourceRoutes returns the first argument of every Handle and HandleFunc
// call in the package's non-test files, evaluated as a string constant
// (constants of this package and of headroom packages it names are
// resolved from their source).
func sourceRoutes(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	consts := map[string]constant.Value{} // "name" or "pkg.name"
	var calls []*ast.CallExpr
	var callFiles []string
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	parse := func(path, pkg string, collect bool) {
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							key := name.Name
							if pkg != "" {
								key = pkg + "." + key
							}
							consts[key] = constant.MakeFromLiteral(lit.Value, token.STRING, 0)
						}
					}
				}
			}
		}
		if !collect {
			return
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Handle" || sel.Sel.Name == "HandleFunc") {
				calls = append(calls, call)
				callFiles = append(callFiles, path)
			}
			return true
		})
	}
	web, _ := filepath.Glob(filepath.Join("..", "web", "*.go")) // the dashboard's routes
	for _, path := range append(files, web...) {
		if !strings.HasSuffix(path, "_test.go") {
			parse(path, "", true)
		}
	}
	for _, pkg := range []string{"cluster", "plans", "wire", "internal/jsonhttp"} {
		others, _ := filepath.Glob(filepath.Join("..", "..", pkg, "*.go"))
		for _, path := range others {
			if !strings.HasSuffix(path, "_test.go") {
				parse(path, filepath.Base(pkg), false)
			}
		}
	}
	var eval func(e ast.Expr) (string, bool)
	eval = func(e ast.Expr) (string, bool) {
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind == token.STRING {
				s, err := strconv.Unquote(e.Value)
				return s, err == nil
			}
		case *ast.ParenExpr:
			return eval(e.X)
		case *ast.BinaryExpr:
			if e.Op == token.ADD {
				a, ok1 := eval(e.X)
				b, ok2 := eval(e.Y)
				return a + b, ok1 && ok2
			}
		case *ast.Ident:
			if v, ok := consts[e.Name]; ok {
				return constant.StringVal(v), true
			}
		case *ast.SelectorExpr:
			if x, ok := e.X.(*ast.Ident); ok {
				if v, ok := consts[x.Name+"."+e.Sel.Name]; ok {
					return constant.StringVal(v), true
				}
			}
		}
		return "", false
	}
	var out []string
	for i, call := range calls {
		s, ok := eval(call.Args[0])
		if !ok {
			t.Errorf("%s: %s: cannot read the route pattern of this %T as a constant; write it as a constant so the OpenAPI test can check it",
				callFiles[i], fset.Position(call.Pos()), call.Args[0])
			continue
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// TestOpenAPIDocument checks the served document: OpenAPI 3, the endpoints
// the dashboard and scrapers need, path parameters declared, every schema
// reference resolved.
func TestOpenAPIDocument(t *testing.T) {
	rec := httptest.NewRecorder()
	handleOpenAPI(rec, httptest.NewRequest("GET", "/v1/openapi.json", nil))
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	var doc struct {
		OpenAPI    string                               `json:"openapi"`
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
	for _, p := range []string{"/v1/openapi.json", "/metrics", "/v1/events", "/", "/v1/tenants", "/v1/tenants/{id}"} {
		if doc.Paths[p]["get"] == nil {
			t.Errorf("GET %s not documented", p)
		}
	}
	for _, name := range []string{"Tenant", "ConcurrencyEvent", "LeaderEvent", "Alert", "Audit", "Error", "Plan", "UsageReport"} {
		if doc.Components.Schemas[name] == nil {
			t.Errorf("schema %s missing; have %v", name, keys(doc.Components.Schemas))
		}
	}
	for path, item := range doc.Paths {
		for method, op := range item {
			params, _ := op["parameters"].([]any)
			for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
				found := false
				for _, p := range params {
					pm := p.(map[string]any)
					found = found || pm["in"] == "path" && pm["name"] == m[1]
				}
				if !found {
					t.Errorf("%s %s: path parameter %s not declared", method, path, m[1])
				}
			}
			if op["responses"] == nil || op["operationId"] == nil {
				t.Errorf("%s %s: no responses or operationId", method, path)
			}
		}
	}
	for _, ref := range regexp.MustCompile(`"\$ref":"#/components/schemas/([^"]+)"`).FindAllStringSubmatch(rec.Body.String(), -1) {
		if doc.Components.Schemas[ref[1]] == nil {
			t.Errorf("unresolved $ref %s", ref[1])
		}
	}
	// The tenant list's schema follows TenantJSON.
	tenant, _ := doc.Components.Schemas["Tenant"].(map[string]any)
	props, _ := tenant["properties"].(map[string]any)
	for _, f := range []string{"tenant", "plan", "ceiling", "concurrency", "utilization"} {
		if props[f] == nil {
			t.Errorf("Tenant schema lacks %s: %v", f, keys(props))
		}
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
