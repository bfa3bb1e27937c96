package api

// The OpenAPI 3 document of the aggregator's HTTP API, served at
// GET /v1/openapi.json. Operations are listed by hand in apiOps (what a
// route does, its parameters and answers); the schemas of bodies are
// derived from the Go types the handlers encode and decode, so they cannot
// drift from them. TestOpenAPIMatchesRoutes fails when a route is
// registered without an entry here, or an entry has no route: a new route
// needs its apiOp.

import (
	"encoding"
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/headroom-rtc/headroom/cluster"
	"github.com/headroom-rtc/headroom/plans"
)

// apiParam is a query parameter.
type apiParam struct {
	name, typ, desc string // typ: string, integer, number, boolean
}

// apiOp is one operation: a method on a path. Path parameters are taken
// from the path ({id}).
type apiOp struct {
	method, path string
	tag          string
	summary      string
	desc         string
	query        []apiParam
	body         any    // a value of the request body's type; nil for none
	resp         any    // a value of the answer's type; nil for a free-form JSON object
	code         int    // the answer's status (default 200)
	media        string // the answer's media type (default application/json)
	errs         []int  // error status codes the operation documents
	headers      map[string]string
}

// Tags group operations.
const (
	tagTenants = "tenants"
	tagPlans   = "plans"
	tagCluster = "cluster"
	tagLive    = "live"
	tagMeta    = "meta"
	tagACL     = "acl"
)

var consistentParam = apiParam{"consistent", "boolean", "true: answer from the leader after confirming its leadership (a follower forwards the request) instead of this server's own state"}

var periodParam = apiParam{"period", "string", "billing period YYYY-MM (default: the current one)"}

// apiOps lists every operation of the API. Keep it in step with routes().
var apiOps = []apiOp{
	{method: "GET", path: "/healthz", tag: tagMeta, summary: "Readiness",
		desc: "200 once a leader is known and this server has applied everything committed; 503 with the reason otherwise.",
		resp: map[string]string{}, errs: []int{503}},
	{method: "GET", path: "/v1/status", tag: tagCluster, summary: "This server's Raft status", resp: StatusJSON{}},
	{method: "GET", path: "/v1/tenants", tag: tagTenants, summary: "List tenants: filtered, sorted, paged",
		desc: "Without limit, every tenant that matches, in one answer. With limit, a page; the next page's cursor comes in X-Next-Cursor, absent on the last page. Ties in the order are broken by tenant id.",
		query: []apiParam{
			{"limit", "integer", "page size, 1 to 1000 (default: no paging)"},
			{"cursor", "string", "X-Next-Cursor of the previous page (opaque; only for the same sort)"},
			{"sort", "string", "tenant (ascending, the default), utilization or concurrency (highest first)"},
			{"plan", "string", "only tenants on this plan"},
			{"min_utilization", "number", "only tenants with concurrency/ceiling at least this (0.8 = 80%); tenants without a ceiling have 0"},
			{"q", "string", "only tenants whose id contains this (ASCII letters case-insensitive)"},
			consistentParam,
		},
		resp: []fsm.TenantJSON{}, errs: []int{400},
		headers: map[string]string{
			"X-Next-Cursor": "cursor of the next page; absent on the last page",
			"X-Total-Count": "tenants matching the filters, over all pages",
		}},
	{method: "GET", path: "/v1/tenants/{id}", tag: tagTenants, summary: "A tenant: figures, usage of a period, a strict plan's pools",
		query: []apiParam{periodParam, consistentParam}, resp: fsm.TenantJSON{}, errs: []int{400, 404}},
	{method: "PUT", path: "/v1/tenants/{id}/plan", tag: tagTenants, summary: "Put a tenant on a plan (creates the tenant)",
		desc: `"at": "now", "period-end" or an RFC 3339 time; empty: an upgrade (higher fee) now, a downgrade at the period's end.`,
		body: struct {
			Plan string `json:"plan"`
			At   string `json:"at,omitempty"`
		}{}, resp: fsm.TenantJSON{}, errs: []int{400, 503}},
	{method: "GET", path: "/v1/tenants/{id}/usage", tag: tagTenants, summary: "Usage of a period, day by day, and the invoice",
		query: []apiParam{periodParam, consistentParam}, resp: fsm.UsageReportJSON{}, errs: []int{400, 404}},
	{method: "GET", path: "/v1/tenants/{id}/advice", tag: tagTenants, summary: "Does the plan fit? The cheapest that does",
		query: []apiParam{periodParam, {"headroom", "integer", "headroom over the projected peak, percent (1 to 1000)"}, consistentParam},
		resp:  plans.Advice{}, errs: []int{400, 404, 409}},
	{method: "GET", path: "/v1/tenants/{id}/history", tag: tagTenants, summary: "Recent history: the peak and the ceiling of each minute, the last 6 h",
		desc: "Kept in memory by each server from the entries it applies (not across a restart: it refills from then on), for the busiest --history-max-tenants tenants; " +
			"a minute's peak is the highest open count an entry of that minute left the tenant with, a minute without one carrying the previous count.",
		query: []apiParam{{"since", "string", "an RFC 3339 time, or a duration before the latest entry such as 1h (default: 6h)"}, consistentParam},
		resp:  HistoryJSON{}, errs: []int{400, 404}},
	{method: "GET", path: "/v1/tenants/{id}/schedule", tag: tagTenants, summary: "The tenant's pending plan change, if any",
		query: []apiParam{consistentParam}, resp: []fsm.ScheduledJSON{}, errs: []int{404}},
	{method: "DELETE", path: "/v1/tenants/{id}/schedule", tag: tagTenants, summary: "Cancel the pending plan change",
		query: []apiParam{{"id", "integer", "cancel only the change with this id"}}, resp: fsm.TenantJSON{}, errs: []int{400, 503}},
	{method: "POST", path: "/v1/tenants/{id}/suspend", tag: tagTenants, summary: "Suspend: new sessions are refused, running ones go on",
		resp: fsm.TenantJSON{}, errs: []int{400, 503}},
	{method: "POST", path: "/v1/tenants/{id}/resume", tag: tagTenants, summary: "Resume a suspended tenant", resp: fsm.TenantJSON{}, errs: []int{400, 503}},
	{method: "DELETE", path: "/v1/tenants/{id}", tag: tagTenants, summary: "Delete a tenant without open sessions or unbilled usage",
		resp: map[string]string{}, errs: []int{400, 503}},
	{method: "GET", path: "/v1/audit", tag: tagTenants, summary: "Audit log, newest first",
		query: []apiParam{{"tenant", "string", "only this tenant's entries"}, {"limit", "integer", "at most this many (1 to 100000, default 1000)"}, consistentParam},
		resp:  []AuditJSON{}, errs: []int{400}},
	{method: "GET", path: "/v1/plans", tag: tagPlans, summary: "The plan catalogue", query: []apiParam{consistentParam}, resp: []plans.Plan{}},
	{method: "GET", path: "/v1/plans/{name}", tag: tagPlans, summary: "One plan", query: []apiParam{consistentParam}, resp: plans.Plan{}, errs: []int{404}},
	{method: "POST", path: "/v1/plans", tag: tagPlans, summary: "Create a plan", body: plans.Plan{}, resp: plans.Plan{}, code: 201, errs: []int{400, 503}},
	{method: "PUT", path: "/v1/plans/{name}", tag: tagPlans, summary: "Update a plan; tenants on it follow at once", body: plans.Plan{}, resp: plans.Plan{}, errs: []int{400, 503}},
	{method: "DELETE", path: "/v1/plans/{name}", tag: tagPlans, summary: "Delete a plan no tenant uses", resp: map[string]string{}, errs: []int{400, 503}},
	{method: "GET", path: "/v1/export/invoices", tag: tagTenants, summary: "Every tenant's invoice of a period, line by line, streamed (finance's export)",
		desc: "The same lines and integer amounts as each tenant's usage report. format=csv: a header row, then one row per line (period, tenant, line, kind, plan, class, from, to, quantity, unit, rate_micros, amount_micros, detail); " +
			"a tenant with usage but no invoice gets one row of kind error. Tenants that held no plan and used nothing in the period are left out. " +
			"A closed period's export never changes; periods before the previous one are refused (409): their day-by-day usage is no longer kept.",
		query: []apiParam{periodParam, {"format", "string", "json (the default) or csv"}, consistentParam},
		resp:  InvoicesExportJSON{}, errs: []int{400, 409},
		headers: map[string]string{"X-Headroom-Period-Closed": "true when the period is closed: its invoices never change"}},
	{method: "GET", path: "/v1/agents", tag: tagCluster, summary: "Agents the cluster knows", query: []apiParam{consistentParam}, resp: []AgentJSON{}},
	{method: "GET", path: "/v1/members", tag: tagCluster, summary: "Servers in gossip, with their Raft role", resp: []MemberJSON{}},
	{method: "GET", path: "/v1/raft/peers", tag: tagCluster, summary: "The Raft configuration", resp: []PeerJSON{}, errs: []int{500}},
	{method: "DELETE", path: "/v1/raft/peers/{id}", tag: tagCluster, summary: "Remove a server from the Raft configuration", resp: map[string]string{}, errs: []int{400, 503}},
	{method: "GET", path: cluster.StatsPath, tag: tagCluster, summary: "This server's Raft figures (read by the leader's autopilot)", resp: cluster.RaftStats{}},
	{method: "POST", path: cluster.RemovePeerPath, tag: tagCluster, summary: "Remove a server from Raft, on the leader (called by a leaving server)",
		body: struct {
			ID string `json:"id"`
		}{}, resp: map[string]string{}, errs: []int{400, 404, 409, 500}},
	{method: "POST", path: "/v1/leave", tag: tagCluster, summary: "Take this server out of the cluster and stop it", resp: map[string]string{}, errs: []int{500}},
	{method: "GET", path: "/v1/snapshot", tag: tagCluster, summary: "This server's state as a snapshot file (a Raft snapshot taken now: header, state, SHA-256)", media: "application/octet-stream",
		headers: map[string]string{"X-Headroom-Index": "the Raft index the snapshot is of"}},
	{method: "PUT", path: "/v1/snapshot", tag: tagCluster, summary: "Replace the cluster's state with a snapshot file; one that fails its checksum or does not decode is refused, nothing changed", body: []byte(nil),
		resp: map[string]any{}, errs: []int{400, 503}},
	{method: "GET", path: "/v1/openapi.json", tag: tagMeta, summary: "This document", resp: map[string]any{}},
	{method: "GET", path: "/v1/events", tag: tagLive, summary: "Live updates (server-sent events)",
		desc: "A text/event-stream of events `event: NAME` / `data: ONE-LINE-JSON`: " +
			"`concurrency` (ConcurrencyEvent: the tenants whose plan, ceiling or open sessions changed since the previous one; at most one a second), " +
			"`plan` (Audit: a change of a tenant's plan or standing, or of the catalogue), " +
			"`alert` (Alert: as the webhook receives it, from every server), " +
			"`leader` (LeaderEvent: at the start and whenever this server sees another leader or term). " +
			"A comment line `: keepalive` every 15 s. A client that does not keep up is dropped; open the stream before reading the figures it updates.",
		query: []apiParam{{"tenant", "string", "only this tenant's concurrency, plan and alert events"}},
		media: "text/event-stream", errs: []int{400, 503}},
	{method: "GET", path: "/metrics", tag: tagMeta, summary: "Prometheus metrics", media: "text/plain"},
	{method: "GET", path: "/", tag: tagMeta, summary: "The web dashboard", media: "text/html"},
	{method: "GET", path: "/ui/", tag: tagMeta, summary: "The dashboard's files: every path under /ui/ (script, style)",
		media: "application/octet-stream", errs: []int{404}},
	{method: "POST", path: "/v1/acl/bootstrap", tag: tagACL, summary: "Create the first operator token, once (the only write without a token)",
		resp: TokenJSON{}, code: 201, errs: []int{403, 503}},
	{method: "POST", path: "/v1/tokens", tag: tagACL, summary: "Create a token; its secret is shown only here",
		body: struct {
			Role        string `json:"role"`
			Tenant      string `json:"tenant,omitempty"`
			Description string `json:"description,omitempty"`
		}{}, resp: TokenJSON{}, code: 201, errs: []int{400, 503}},
	{method: "GET", path: "/v1/tokens", tag: tagACL, summary: "Tokens (never their secrets)", query: []apiParam{consistentParam}, resp: []TokenJSON{}},
	{method: "DELETE", path: "/v1/tokens/{accessor}", tag: tagACL, summary: "Revoke a token", resp: map[string]string{}, errs: []int{400, 503}},
	{method: "GET", path: cluster.KeyringPath, tag: tagCluster, summary: "The gossip keyring of every server", resp: cluster.KeyringResult{}, errs: []int{400, 409, 502}},
	{method: "POST", path: cluster.KeyringPath, tag: tagCluster, summary: "Change the gossip keyring on every server: install, use or remove a key",
		body: keyringBody, resp: cluster.KeyringResult{}, errs: []int{400, 409, 502}},
	{method: "GET", path: cluster.KeyringLocalPath, tag: tagCluster, summary: "This server's gossip keyring (servers call it on each other)",
		resp: cluster.KeyringStatus{}, errs: []int{400, 409}},
	{method: "POST", path: cluster.KeyringLocalPath, tag: tagCluster, summary: "Change this server's gossip keyring (servers call it on each other)",
		body: keyringBody, resp: cluster.KeyringStatus{}, errs: []int{400, 409}},
}

// keyringBody is the body of the keyring changes: op list, install, use
// or remove, and a base64 key.
var keyringBody = struct {
	Op  cluster.KeyringOp `json:"op"`
	Key string            `json:"key"`
}{}

// eventSchemas are the data of /v1/events, listed as components.
var eventSchemas = []any{ConcurrencyEventJSON{}, AuditJSON{}, Alert{}, LeaderEventJSON{}}

// openAPIJSON is the document, built once.
var openAPIJSON = sync.OnceValue(func() []byte {
	b, err := json.Marshal(openAPIDocument())
	if err != nil {
		panic("aggregator: OpenAPI document: " + err.Error()) // only our own types go in
	}
	return b
})

func handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(openAPIJSON())
}

var pathParam = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// openAPIDocument builds the document from apiOps.
func openAPIDocument() map[string]any {
	g := &schemaGen{comps: map[string]any{}, names: map[reflect.Type]string{}}
	g.comps["Error"] = g.of(reflect.TypeFor[struct {
		Error string `json:"error"`
	}]())
	paths := map[string]any{}
	for _, op := range apiOps {
		item, _ := paths[op.path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[op.path] = item
		}
		item[strings.ToLower(op.method)] = g.operation(op)
	}
	for _, v := range eventSchemas {
		g.of(reflect.TypeOf(v))
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":   "headroom aggregator API",
			"version": "1",
			"description": "Every aggregator serves this API. Reads answer from the server's own state (add ?consistent=true to read through the leader); " +
				"writes go to the leader (a follower forwards them). Every error is {\"error\": \"...\"} with a 4xx or 5xx code. " +
				"Reads carry X-Headroom-Index (the Raft index answered from) and X-Headroom-Leader (the leader's HTTP address).",
		},
		"tags": []any{
			map[string]string{"name": tagTenants, "description": "tenants, their plans, usage and audit"},
			map[string]string{"name": tagPlans, "description": "the plan catalogue"},
			map[string]string{"name": tagCluster, "description": "servers, Raft and agents"},
			map[string]string{"name": tagLive, "description": "live updates"},
			map[string]string{"name": tagMeta, "description": "health, metrics, this document, the dashboard"},
			map[string]string{"name": tagACL, "description": "access tokens (when the server runs with ACLs)"},
		},
		// With ACLs on, every route but health, the bootstrap and the
		// dashboard's files needs a token; without, none does.
		"security": []any{map[string]any{}, map[string]any{"bearer": []string{}}},
		"paths":    paths,
		"components": map[string]any{
			"schemas": g.comps,
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "the secret of an ACL token"},
			},
		},
	}
}

func (g *schemaGen) operation(op apiOp) map[string]any {
	o := map[string]any{
		"summary":     op.summary,
		"tags":        []string{op.tag},
		"operationId": operationID(op),
	}
	if op.desc != "" {
		o["description"] = op.desc
	}
	var params []any
	for _, m := range pathParam.FindAllStringSubmatch(op.path, -1) {
		params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]string{"type": "string"}})
	}
	for _, p := range op.query {
		params = append(params, map[string]any{"name": p.name, "in": "query", "description": p.desc, "schema": map[string]string{"type": p.typ}})
	}
	if params != nil {
		o["parameters"] = params
	}
	if op.body != nil {
		media := "application/json"
		schema := g.of(reflect.TypeOf(op.body))
		if _, raw := op.body.([]byte); raw {
			media, schema = "application/octet-stream", map[string]any{"type": "string", "format": "binary"}
		}
		o["requestBody"] = map[string]any{"required": true, "content": map[string]any{media: map[string]any{"schema": schema}}}
	}
	code, media := op.code, op.media
	if code == 0 {
		code = http.StatusOK
	}
	if media == "" {
		media = "application/json"
	}
	var schema any = map[string]any{"type": "string"}
	switch {
	case op.resp != nil:
		schema = g.of(reflect.TypeOf(op.resp))
	case media == "application/json":
		schema = map[string]any{"type": "object"}
	case media == "application/octet-stream":
		schema = map[string]any{"type": "string", "format": "binary"}
	}
	ok := map[string]any{"description": http.StatusText(code), "content": map[string]any{media: map[string]any{"schema": schema}}}
	if len(op.headers) > 0 {
		hs := map[string]any{}
		for name, desc := range op.headers {
			hs[name] = map[string]any{"description": desc, "schema": map[string]string{"type": "string"}}
		}
		ok["headers"] = hs
	}
	resps := map[string]any{strconv.Itoa(code): ok}
	errRef := map[string]any{"application/json": map[string]any{"schema": map[string]string{"$ref": "#/components/schemas/Error"}}}
	for _, c := range op.errs {
		resps[strconv.Itoa(c)] = map[string]any{"description": http.StatusText(c), "content": errRef}
	}
	o["responses"] = resps
	return o
}

// operationID is a method and path as one identifier: getV1TenantsId.
func operationID(op apiOp) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(op.method))
	for _, part := range strings.FieldsFunc(op.path, func(r rune) bool { return r == '/' || r == '{' || r == '}' || r == '.' || r == '-' }) {
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	if op.path == "/" {
		b.WriteString("Root")
	}
	return b.String()
}

// schemaGen derives JSON schemas from Go types as encoding/json encodes
// them; named struct types become components.
type schemaGen struct {
	comps map[string]any
	names map[reflect.Type]string
}

var (
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
	timeType      = reflect.TypeFor[time.Time]()
)

func (g *schemaGen) of(t reflect.Type) map[string]any {
	if t.Kind() == reflect.Pointer {
		s := g.of(t.Elem())
		if _, isRef := s["$ref"]; isRef {
			return map[string]any{"allOf": []any{s}, "nullable": true}
		}
		s["nullable"] = true
		return s
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t.Implements(textMarshaler):
		return map[string]any{"type": "string"}
	}
	switch t.Kind() {
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "format": "byte"}
		}
		return map[string]any{"type": "array", "items": g.of(t.Elem())}
	case reflect.Array:
		return map[string]any{"type": "array", "items": g.of(t.Elem()), "minItems": t.Len(), "maxItems": t.Len()}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.of(t.Elem())}
	case reflect.Struct:
		if t.Name() == "" {
			return g.object(t)
		}
		name, ok := g.names[t]
		if !ok {
			name = strings.TrimSuffix(t.Name(), "JSON")
			if _, taken := g.comps[name]; taken {
				name = t.PkgPath()[strings.LastIndex(t.PkgPath(), "/")+1:] + "." + name
			}
			g.names[t] = name
			g.comps[name] = map[string]any{} // placeholder for recursive types
			g.comps[name] = g.object(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{} // any value
}

// object is the schema of a struct: its JSON fields, embedded structs'
// fields inlined.
func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	g.fields(t, props, &required)
	s := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		sort.Strings(required)
		s["required"] = required
	}
	return s
}

func (g *schemaGen) fields(t reflect.Type, props map[string]any, required *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				g.fields(ft, props, required)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = g.of(f.Type)
		if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
			*required = append(*required, name)
		}
	}
}
