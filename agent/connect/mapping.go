// Package connect holds what every media server connector shares: the
// mapping rules that derive a session's tenant and class from what a hook
// says, and the HTTP helpers the hook handlers use. The connectors
// themselves live in the sub-folders (nginxrtmp, livekit, ...); each works
// on the agent through an agent.Connector handle, which gives its sessions
// their source, scopes its reconciles and keeps its counts.
package connect

import (
	"errors"
	"fmt"
	"strings"

	"github.com/headroom-rtc/headroom/plans"
)

// Input is what a hook tells about a session, in the terms the rules use.
type Input struct {
	// Args are named values: the stream URL's query arguments (nginx-rtmp),
	// a participant's attributes (LiveKit).
	Args map[string]string
	// App is the application name (nginx-rtmp's app; empty elsewhere).
	App string
	// Name is the stream name (nginx-rtmp) or the room name (LiveKit).
	Name string
}

// ErrUnmapped: no rule derived a tenant. The wrapping error says why.
var ErrUnmapped = errors.New("no tenant could be derived")

// Rule derives a tenant from an Input. Its forms (as flags write them):
//
//	arg:NAME          the value of the argument (query argument, attribute) NAME
//	app               the application name
//	name-prefix:SEP   the stream or room name up to the first SEP (SEP must occur)
//	fixed:TENANT      always TENANT (a media server serving one tenant)
type Rule struct {
	kind  string // "arg", "app", "name-prefix", "fixed"
	param string
}

// ParseRule parses one rule; a bare "arg" takes defaultArg as its NAME.
func ParseRule(s, defaultArg string) (Rule, error) {
	kind, param, _ := strings.Cut(strings.TrimSpace(s), ":")
	switch kind {
	case "arg", "attr":
		if param == "" {
			param = defaultArg
		}
		if param == "" {
			return Rule{}, fmt.Errorf("rule %q: arg needs a name (arg:NAME)", s)
		}
		return Rule{"arg", param}, nil
	case "app":
		if param != "" {
			return Rule{}, fmt.Errorf("rule %q: app takes no parameter", s)
		}
		return Rule{"app", ""}, nil
	case "name-prefix":
		if param == "" {
			return Rule{}, fmt.Errorf("rule %q: name-prefix needs a separator (name-prefix:_)", s)
		}
		return Rule{"name-prefix", param}, nil
	case "fixed":
		if err := plans.ValidateTenantID(param); err != nil {
			return Rule{}, fmt.Errorf("rule %q: %v", s, err)
		}
		return Rule{"fixed", param}, nil
	}
	return Rule{}, fmt.Errorf("rule %q: want arg[:NAME], app, name-prefix:SEP or fixed:TENANT", s)
}

// String writes the rule as ParseRule reads it.
func (r Rule) String() string {
	if r.param == "" {
		return r.kind
	}
	return r.kind + ":" + r.param
}

// tenant applies the rule: the tenant, or why not.
func (r Rule) tenant(in Input) (string, string) {
	var v, what string
	switch r.kind {
	case "arg":
		v, what = in.Args[r.param], fmt.Sprintf("argument %q", r.param)
	case "app":
		v, what = in.App, "application name"
	case "name-prefix":
		p, _, ok := strings.Cut(in.Name, r.param)
		if !ok {
			return "", fmt.Sprintf("name %q has no %q", Truncate(in.Name), r.param)
		}
		v, what = p, fmt.Sprintf("prefix of name %q", Truncate(in.Name))
	case "fixed":
		return r.param, ""
	}
	if v == "" {
		return "", "no " + what
	}
	if err := plans.ValidateTenantID(v); err != nil {
		return "", fmt.Sprintf("%s is not a tenant id: %v", what, err)
	}
	return v, ""
}

// Rules are tried in order; the first that derives a tenant wins.
type Rules []Rule

// ParseRules parses a comma-separated list of rules.
func ParseRules(s, defaultArg string) (Rules, error) {
	var rs Rules
	for _, p := range strings.Split(s, ",") {
		if strings.TrimSpace(p) == "" {
			continue
		}
		r, err := ParseRule(p, defaultArg)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return nil, errors.New("no tenant rule given")
	}
	return rs, nil
}

// Tenant derives the tenant of in, or returns an error wrapping ErrUnmapped
// that says what each rule lacked. It never guesses.
func (rs Rules) Tenant(in Input) (string, error) {
	var why []string
	for _, r := range rs {
		t, reason := r.tenant(in)
		if reason == "" {
			return t, nil
		}
		why = append(why, reason)
	}
	return "", fmt.Errorf("%w: %s", ErrUnmapped, strings.Join(why, "; "))
}

func (rs Rules) String() string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// ClassRule derives a session's class: the argument Arg when present, else
// the application's default (PerApp), else Default.
type ClassRule struct {
	Arg     string
	PerApp  map[string]plans.Class
	Default plans.Class
}

// ErrBadClass: the class argument names no class.
var ErrBadClass = errors.New("bad class")

// Class applies the rule; a class argument that names no class is an error
// wrapping ErrBadClass (refused, never replaced by the default).
func (c ClassRule) Class(in Input) (plans.Class, error) {
	if c.Arg != "" {
		if v, ok := in.Args[c.Arg]; ok {
			cls, err := plans.ParseClass(v)
			if err != nil {
				return 0, fmt.Errorf("%w: argument %q: %v", ErrBadClass, c.Arg, err)
			}
			return cls, nil
		}
	}
	if cls, ok := c.PerApp[in.App]; ok {
		return cls, nil
	}
	return c.Default, nil
}

// ParseAppClasses parses APP=CLASS pairs (flags, repeatable or
// comma-separated).
func ParseAppClasses(pairs []string) (map[string]plans.Class, error) {
	m := map[string]plans.Class{}
	for _, kv := range pairs {
		for _, p := range strings.Split(kv, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			app, cl, ok := strings.Cut(p, "=")
			if !ok || app == "" {
				return nil, fmt.Errorf("%q: want APP=CLASS", p)
			}
			cls, err := plans.ParseClass(cl)
			if err != nil {
				return nil, fmt.Errorf("%q: %v", p, err)
			}
			m[app] = cls
		}
	}
	return m, nil
}
