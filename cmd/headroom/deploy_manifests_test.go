package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"

	"github.com/headroom-rtc/headroom/plans"
)

// The tests in this file read what deploy/ holds (the Dockerfile, the
// compose file, the systemd units and the Kubernetes manifests), decode every
// YAML document, and check the fields that tie them together: each command
// line parses with the flags of the headroom command it runs, each address
// one component gives another names a service and the port that service
// listens on, labels select the pods they mean, volumes and files mounted
// exist. TestDockerCluster (deploy/) runs the compose file for real.

const deployDir = "../../deploy"

// parsedArgs is a command line of the headroom binary parsed with the flags
// of its subcommand.
type parsedArgs struct {
	cmd string
	set *flag.FlagSet
}

// parseArgs parses argv (subcommand first) exactly as the binary would,
// refusing unknown flags and positional arguments.
func parseArgs(argv []string) (parsedArgs, error) {
	if len(argv) == 0 {
		return parsedArgs{}, fmt.Errorf("empty command line")
	}
	var cmd *cli.Command
	for _, c := range newApp().Commands {
		if c.Name == argv[0] {
			cmd = c
		}
	}
	if cmd == nil {
		return parsedArgs{}, fmt.Errorf("%q is not a headroom command", argv[0])
	}
	set := flag.NewFlagSet(argv[0], flag.ContinueOnError)
	set.SetOutput(io.Discard)
	for _, f := range cmd.Flags {
		if err := f.Apply(set); err != nil {
			return parsedArgs{}, err
		}
	}
	if err := set.Parse(argv[1:]); err != nil {
		return parsedArgs{}, fmt.Errorf("headroom %s: %w", argv[0], err)
	}
	if set.NArg() > 0 {
		return parsedArgs{}, fmt.Errorf("headroom %s: positional arguments %q", argv[0], set.Args())
	}
	return parsedArgs{cmd: argv[0], set: set}, nil
}

// get is a flag's value as given ("" when not given).
func (p parsedArgs) get(name string) string {
	given := false
	p.set.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	if !given {
		return ""
	}
	return p.set.Lookup(name).Value.String()
}

// list is a slice flag's values, comma-separated lists flattened.
func (p parsedArgs) list(name string) []string {
	f := p.set.Lookup(name)
	if f == nil {
		return nil
	}
	if s, ok := f.Value.(*cli.StringSlice); ok {
		return splitList(s.Value())
	}
	return splitList([]string{p.get(name)})
}

// port is the port of a host:port flag.
func (p parsedArgs) port(t *testing.T, name string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(p.get(name))
	if err != nil {
		t.Errorf("headroom %s --%s %q: %v", p.cmd, name, p.get(name), err)
	}
	return port
}

func mustParse(t *testing.T, where string, argv []string) parsedArgs {
	t.Helper()
	p, err := parseArgs(argv)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return p
}

func readDeploy(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// yamlDocs decodes every document of a YAML file (through JSON, as
// Kubernetes does); empty documents are left out.
func yamlDocs(t *testing.T, data []byte, where string) []map[string]any {
	t.Helper()
	var docs []map[string]any
	for i, part := range docSep.Split(string(data), -1) {
		var d map[string]any
		if err := yaml.Unmarshal([]byte(part), &d); err != nil {
			t.Fatalf("%s, document %d: %v", where, i+1, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

// m, s and l walk decoded YAML: a map, a string, a list.
func m(v any, path ...string) map[string]any {
	for _, k := range path {
		mm, _ := v.(map[string]any)
		v = mm[k]
	}
	mm, _ := v.(map[string]any)
	return mm
}

func s(v any, path ...string) string {
	for _, k := range path {
		mm, _ := v.(map[string]any)
		v = mm[k]
	}
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

func l(v any, path ...string) []any {
	for _, k := range path {
		mm, _ := v.(map[string]any)
		v = mm[k]
	}
	ll, _ := v.([]any)
	return ll
}

func strs(v []any) []string {
	out := make([]string, 0, len(v))
	for _, x := range v {
		out = append(out, s(x))
	}
	return out
}

// subset reports whether every label of sel is in labels.
func subset(sel, labels map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestDeployPlansFile checks the plan catalogue deploy/ ships loads as the
// aggregator's --plans loads it.
func TestDeployPlansFile(t *testing.T) {
	ps, err := plans.LoadCatalogue(readDeploy(t, "plans.yaml"))
	if err != nil {
		t.Fatalf("deploy/plans.yaml: %v", err)
	}
	if len(ps) == 0 {
		t.Fatal("deploy/plans.yaml holds no plan")
	}
}

// TestDeployDockerfile checks the image: FROM scratch, not root, the data
// volume, a HEALTHCHECK that runs `headroom health`, and a default command
// that parses.
func TestDeployDockerfile(t *testing.T) {
	lines := dockerfileInstructions(t, string(readDeploy(t, "docker/Dockerfile")))
	first := func(op string) string {
		for _, in := range lines {
			if in[0] == op {
				return in[1]
			}
		}
		return ""
	}
	if from := first("FROM"); from != "scratch" {
		t.Errorf("FROM %q, want scratch", from)
	}
	if u := first("USER"); u == "" || strings.HasPrefix(u, "0") || strings.HasPrefix(u, "root") {
		t.Errorf("USER %q: want a user other than root", u)
	}
	if v := first("VOLUME"); !strings.Contains(v, `"/data"`) {
		t.Errorf("VOLUME %q, want /data", v)
	}
	var entry []string
	if err := yaml.Unmarshal([]byte(first("ENTRYPOINT")), &entry); err != nil || len(entry) != 1 {
		t.Fatalf("ENTRYPOINT %q: want the binary alone, in exec form (%v)", first("ENTRYPOINT"), err)
	}
	binary := entry[0]
	copied := false
	for _, in := range lines {
		if in[0] == "COPY" && strings.HasSuffix(in[1], " "+binary) {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the ENTRYPOINT %s is not what a COPY puts in the image", binary)
	}
	hc := first("HEALTHCHECK")
	i := strings.Index(hc, "CMD ")
	var check []string
	if i < 0 || yaml.Unmarshal([]byte(hc[i+4:]), &check) != nil || len(check) < 2 || check[0] != binary {
		t.Fatalf("HEALTHCHECK %q: want CMD [%q, \"health\", ...] in exec form", hc, binary)
	}
	if p := mustParse(t, "HEALTHCHECK", check[1:]); p.cmd != "health" {
		t.Errorf("HEALTHCHECK runs headroom %s, want health", p.cmd)
	}
	var cmd []string
	if err := yaml.Unmarshal([]byte(first("CMD")), &cmd); err != nil {
		t.Fatalf("CMD %q: %v", first("CMD"), err)
	}
	p := mustParse(t, "CMD", cmd)
	if p.get("data-dir") != "/data" {
		t.Errorf("CMD: --data-dir %q, want the volume /data", p.get("data-dir"))
	}
	exposed := first("EXPOSE")
	for _, port := range []string{p.port(t, "http-addr"), p.port(t, "wire-addr"), p.port(t, "raft-addr")} {
		if !slices.Contains(strings.Fields(exposed), port) {
			t.Errorf("EXPOSE %q lacks %s", exposed, port)
		}
	}
}

// dockerfileInstructions returns [instruction, arguments] pairs, with
// continuation lines joined and comments left out.
func dockerfileInstructions(t *testing.T, text string) [][2]string {
	t.Helper()
	var out [][2]string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		op, args, _ := strings.Cut(strings.Join(strings.Fields(cur.String()), " "), " ")
		out = append(out, [2]string{strings.ToUpper(op), args})
		cur.Reset()
	}
	return out
}

var composeVar = regexp.MustCompile(`\$\{([A-Z0-9_]+)(?::-([^}]*))?\}`)

// composeDefaults replaces each ${VAR:-default} by its default, as compose
// does with none of the variables set.
func composeDefaults(text string) string {
	return composeVar.ReplaceAllStringFunc(text, func(v string) string { return composeVar.FindStringSubmatch(v)[2] })
}

// TestDeployCompose checks deploy/compose.yaml: three aggregators joining
// one another by service name with --bootstrap-expect 3, each agent
// speaking to them, each media server to one agent of its own, every port
// a component names being the one the other listens on, every published
// port on loopback, volumes and files mounted.
func TestDeployCompose(t *testing.T) {
	raw := string(readDeploy(t, "compose.yaml"))
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(composeDefaults(raw)), &doc); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	services := m(doc, "services")
	declaredVolumes := m(doc, "volumes")
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	image := regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*(\S+)`).FindSubmatch(makefile)
	if image == nil {
		t.Fatal("Makefile sets no IMAGE")
	}

	type svc struct {
		name string
		def  map[string]any
		args parsedArgs
	}
	byRole := map[string][]svc{}
	names := make([]string, 0, len(services))
	for name := range services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		def := m(services, name)
		argv := strs(l(def, "command"))
		if len(argv) == 0 {
			t.Errorf("service %s: want its command as a list", name)
			continue
		}
		p := mustParse(t, "service "+name, argv)
		byRole[p.cmd] = append(byRole[p.cmd], svc{name, def, p})
		if got := s(def, "image"); got != string(image[1]) {
			t.Errorf("service %s: image %q, want %q (make image)", name, got, image[1])
		}
		for _, port := range strs(l(def, "ports")) {
			if !strings.HasPrefix(port, "127.0.0.1:") {
				t.Errorf("service %s publishes %q: want it on the host's loopback only", name, port)
			}
		}
		for _, nw := range networksOf(def) {
			if _, ok := m(doc, "networks")[nw]; !ok {
				t.Errorf("service %s: network %q is not declared", name, nw)
			}
		}
		// The image's HEALTHCHECK checks 127.0.0.1:9370 unless told otherwise.
		health := s(def, "environment", "HEADROOM_HEALTH_ADDR")
		if health == "" {
			health = "127.0.0.1:9370"
		}
		own := map[string]string{"aggregator": "http-addr", "agent": "api-addr", "sim": "status-addr"}[p.cmd]
		if own != "" {
			if _, port, _ := net.SplitHostPort(health); !strings.HasPrefix(health, "127.0.0.1:") || port != p.port(t, own) {
				t.Errorf("service %s: the health check asks %s, but the %s listens on --%s %s", name, health, p.cmd, own, p.get(own))
			}
		}
	}
	aggs, agents, medias := byRole["aggregator"], byRole["agent"], byRole["sim"]
	if len(aggs) != 3 || len(agents) != 3 || len(medias) != 3 {
		t.Fatalf("compose runs %d aggregators, %d agents, %d media servers: want 3 of each", len(aggs), len(agents), len(medias))
	}

	subnet := s(l(m(doc, "networks", "headroom", "ipam"), "config")[0], "subnet")
	_, cidr, err := net.ParseCIDR(subnet)
	if err != nil {
		t.Fatalf("network headroom: subnet %q: %v", subnet, err)
	}
	aggByName := map[string]svc{}
	for _, a := range aggs {
		aggByName[a.name] = a
	}
	ips := map[string]bool{}
	for _, a := range aggs {
		p := a.args
		if p.get("bootstrap-expect") != strconv.Itoa(len(aggs)) {
			t.Errorf("%s: --bootstrap-expect %q, want %d", a.name, p.get("bootstrap-expect"), len(aggs))
		}
		if p.get("node-id") != a.name || p.get("advertise-addr") != a.name || s(a.def, "hostname") != a.name {
			t.Errorf("%s: --node-id %q, --advertise-addr %q, hostname %q: want the service name", a.name, p.get("node-id"), p.get("advertise-addr"), s(a.def, "hostname"))
		}
		var want []string
		for _, o := range aggs {
			if o.name != a.name {
				want = append(want, net.JoinHostPort(o.name, o.args.port(t, "gossip-addr")))
			}
		}
		if got := p.list("join"); !slices.Equal(sortedCopy(got), want) {
			t.Errorf("%s: --join %v, want the other aggregators' gossip addresses %v", a.name, got, want)
		}
		ip := s(a.def, "networks", "headroom", "ipv4_address")
		if parsed := net.ParseIP(ip); parsed == nil || !cidr.Contains(parsed) || ips[ip] {
			t.Errorf("%s: ipv4_address %q: want a fixed address of its own in %s", a.name, ip, subnet)
		}
		ips[ip] = true
		checkPublished(t, a.name, a.def, p.port(t, "http-addr"), true)
		checkVolume(t, a.name, a.def, declaredVolumes, p.get("data-dir"))
		// --plans names the file mounted from deploy/.
		mounted := false
		for _, v := range strs(l(a.def, "volumes")) {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == p.get("plans") {
				mounted = true
				if _, err := plans.LoadCatalogue(readDeploy(t, parts[0])); err != nil {
					t.Errorf("%s: --plans %s from %s: %v", a.name, parts[1], parts[0], err)
				}
			}
		}
		if !mounted {
			t.Errorf("%s: --plans %q is not a file mounted into it", a.name, p.get("plans"))
		}
	}
	wireAddrs := func() []string {
		var out []string
		for _, a := range aggs {
			out = append(out, net.JoinHostPort(a.name, a.args.port(t, "wire-addr")))
		}
		return out
	}()
	agentByName := map[string]svc{}
	for _, a := range agents {
		agentByName[a.name] = a
		if got := a.args.list("server"); !slices.Equal(sortedCopy(got), wireAddrs) {
			t.Errorf("%s: --server %v, want every aggregator's wire address %v", a.name, got, wireAddrs)
		}
		checkPublished(t, a.name, a.def, a.args.port(t, "api-addr"), false)
		checkVolume(t, a.name, a.def, declaredVolumes, a.args.get("data-dir"))
	}
	usedAgents := map[string]string{}
	for _, md := range medias {
		host, port, _ := net.SplitHostPort(md.args.get("agent"))
		ag, ok := agentByName[host]
		if !ok || port != ag.args.port(t, "api-addr") {
			t.Errorf("%s: --agent %q is not an agent's API", md.name, md.args.get("agent"))
		} else if other := usedAgents[host]; other != "" {
			t.Errorf("%s and %s share the agent %s: want one agent per media server", other, md.name, host)
		}
		usedAgents[host] = md.name
		if !slices.Contains(strs(l(md.def, "depends_on")), host) {
			t.Errorf("%s: depends_on lacks its agent %s", md.name, host)
		}
		host, port, _ = net.SplitHostPort(md.args.get("aggregator"))
		if agg, ok := aggByName[host]; !ok || port != agg.args.port(t, "http-addr") {
			t.Errorf("%s: --aggregator %q is not an aggregator's HTTP API", md.name, md.args.get("aggregator"))
		}
		checkPublished(t, md.name, md.def, md.args.port(t, "status-addr"), false)
	}
}

func networksOf(def map[string]any) []string {
	if nl := l(def, "networks"); nl != nil {
		return strs(nl)
	}
	var out []string
	for k := range m(def, "networks") {
		out = append(out, k)
	}
	return out
}

func sortedCopy(xs []string) []string {
	c := slices.Clone(xs)
	sort.Strings(c)
	return c
}

// checkPublished checks the service publishes its container port on the
// host's loopback, on a fixed host port or on one Docker picks.
func checkPublished(t *testing.T, name string, def map[string]any, port string, fixed bool) {
	t.Helper()
	for _, p := range strs(l(def, "ports")) {
		parts := strings.Split(p, ":")
		if len(parts) == 3 && parts[2] == port && (parts[1] != "") == fixed {
			return
		}
	}
	t.Errorf("service %s: does not publish its port %s on 127.0.0.1 (%v)", name, port, strs(l(def, "ports")))
}

// checkVolume checks dir is where a declared named volume is mounted.
func checkVolume(t *testing.T, name string, def, declared map[string]any, dir string) {
	t.Helper()
	for _, v := range strs(l(def, "volumes")) {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == dir {
			if _, ok := declared[parts[0]]; !ok {
				t.Errorf("service %s: volume %q is not declared", name, parts[0])
			}
			return
		}
	}
	t.Errorf("service %s: --data-dir %q is not a mounted volume", name, dir)
}

// k8sObjects decodes every document under deploy/kubernetes.
func k8sObjects(t *testing.T) (map[string]map[string]any, []string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(deployDir, "kubernetes", "*.y*ml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests under deploy/kubernetes: %v", err)
	}
	objs := map[string]map[string]any{} // "Kind/name"
	var names []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(f))
		for _, d := range yamlDocs(t, data, f) {
			kind, name := s(d, "kind"), s(d, "metadata", "name")
			if kind == "Kustomization" {
				name = filepath.Base(f)
			}
			if kind == "" || s(d, "apiVersion") == "" || name == "" {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", f)
				continue
			}
			key := kind + "/" + name
			if objs[key] != nil {
				t.Errorf("%s: %s defined twice", f, key)
			}
			objs[key] = d
		}
	}
	return objs, names
}

// containerArgs resolves $(VAR) in a container's args from its env
// (values given, or the downward API field named), and parses them.
func containerArgs(t *testing.T, where string, c map[string]any) (parsedArgs, map[string]string) {
	t.Helper()
	env := map[string]string{}
	for _, e := range l(c, "env") {
		v := s(e, "value")
		if f := s(e, "valueFrom", "fieldRef", "fieldPath"); f != "" {
			v = "<" + f + ">"
		}
		env[s(e, "name")] = v
	}
	ref := regexp.MustCompile(`\$\(([A-Z_][A-Z0-9_]*)\)`)
	var argv []string
	for _, a := range strs(l(c, "args")) {
		for _, r := range ref.FindAllStringSubmatch(a, -1) {
			if _, ok := env[r[1]]; !ok {
				t.Errorf("%s: args use $(%s), which its env does not set", where, r[1])
			}
		}
		argv = append(argv, ref.ReplaceAllStringFunc(a, func(x string) string { return env[ref.FindStringSubmatch(x)[1]] }))
	}
	return mustParse(t, where, argv), env
}

// containerPorts maps a container's port names to "number/protocol".
func containerPorts(c map[string]any) map[string]string {
	out := map[string]string{}
	for _, p := range l(c, "ports") {
		proto := s(p, "protocol")
		if proto == "" {
			proto = "TCP"
		}
		out[s(p, "name")] = s(p, "containerPort") + "/" + proto
	}
	return out
}

// TestDeployKubernetes checks deploy/kubernetes: the StatefulSet, its
// headless Service, the client Service, the PodDisruptionBudget, the plan
// ConfigMap and the media-server Deployment fit one another and the flags
// of the commands they run.
func TestDeployKubernetes(t *testing.T) {
	objs, files := k8sObjects(t)
	get := func(key string) map[string]any {
		t.Helper()
		o := objs[key]
		if o == nil {
			t.Fatalf("deploy/kubernetes has no %s", key)
		}
		return o
	}

	// The kustomization lists every other manifest.
	kust := get("Kustomization/kustomization.yaml")
	var want []string
	for _, f := range files {
		if f != "kustomization.yaml" {
			want = append(want, f)
		}
	}
	if got := sortedCopy(strs(l(kust, "resources"))); !slices.Equal(got, sortedCopy(want)) {
		t.Errorf("kustomization resources %v, want %v", got, want)
	}

	sts := get("StatefulSet/headroom")
	pod := m(sts, "spec", "template")
	labels := m(pod, "metadata", "labels")
	if s(sts, "spec", "podManagementPolicy") != "Parallel" {
		t.Errorf("StatefulSet: podManagementPolicy %q, want Parallel", s(sts, "spec", "podManagementPolicy"))
	}
	if !subset(m(sts, "spec", "selector", "matchLabels"), labels) {
		t.Errorf("StatefulSet: its selector does not select its pods")
	}
	headlessName := s(sts, "spec", "serviceName")
	headless := get("Service/" + headlessName)
	if s(headless, "spec", "clusterIP") != "None" || s(headless, "spec", "publishNotReadyAddresses") != "true" {
		t.Errorf("Service %s: want clusterIP None and publishNotReadyAddresses true (servers find each other before any is ready)", headlessName)
	}
	replicas, _ := strconv.Atoi(s(sts, "spec", "replicas"))
	containers := l(pod, "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("StatefulSet: %d containers, want the aggregator alone", len(containers))
	}
	agg := m(containers[0])
	p, env := containerArgs(t, "StatefulSet container", agg)
	if p.cmd != "aggregator" {
		t.Fatalf("StatefulSet runs headroom %s", p.cmd)
	}
	if p.get("bootstrap-expect") != strconv.Itoa(replicas) || replicas < 3 {
		t.Errorf("StatefulSet: %d replicas, --bootstrap-expect %q", replicas, p.get("bootstrap-expect"))
	}
	if env["POD_NAME"] != "<metadata.name>" || p.get("node-id") != "<metadata.name>" {
		t.Errorf("StatefulSet: --node-id %q: want the pod's name", p.get("node-id"))
	}
	ports := containerPorts(agg)
	for flagName, portName := range map[string]string{"http-addr": "http", "wire-addr": "wire", "raft-addr": "raft", "gossip-addr": "gossip-tcp"} {
		if ports[portName] != p.port(t, flagName)+"/TCP" {
			t.Errorf("StatefulSet: port %s is %q, --%s %s", portName, ports[portName], flagName, p.get(flagName))
		}
	}
	if ports["gossip-udp"] != p.port(t, "gossip-addr")+"/UDP" {
		t.Errorf("StatefulSet: gossip-udp is %q, want --gossip-addr's port over UDP", ports["gossip-udp"])
	}
	podNames := map[string]bool{}
	for i := range replicas {
		podNames[fmt.Sprintf("%s-%d.%s", s(sts, "metadata", "name"), i, headlessName)] = true
	}
	for _, j := range p.list("join") {
		host, port, err := net.SplitHostPort(j)
		if err != nil || !podNames[host] || port != p.port(t, "gossip-addr") {
			t.Errorf("StatefulSet: --join %q is not a pod's gossip address (<pod>.%s:%s)", j, headlessName, p.port(t, "gossip-addr"))
		}
	}
	if len(p.list("join")) == 0 {
		t.Errorf("StatefulSet: no --join")
	}
	rp := m(agg, "readinessProbe", "httpGet")
	if s(rp, "path") != "/healthz" || ports[s(rp, "port")] != p.port(t, "http-addr")+"/TCP" {
		t.Errorf("StatefulSet: readinessProbe %v: want GET /healthz on the HTTP port", rp)
	}
	mounts := map[string]string{} // volume name -> mount path
	for _, vm := range l(agg, "volumeMounts") {
		mounts[s(vm, "name")] = s(vm, "mountPath")
	}
	claimed := false
	for _, vct := range l(sts, "spec", "volumeClaimTemplates") {
		if mounts[s(vct, "metadata", "name")] == p.get("data-dir") {
			claimed = true
		}
	}
	if !claimed {
		t.Errorf("StatefulSet: --data-dir %q is not a persistent volume claimed by volumeClaimTemplates", p.get("data-dir"))
	}
	planFileOK := false
	for _, v := range l(pod, "spec", "volumes") {
		cm := s(v, "configMap", "name")
		if cm == "" || filepath.Join(mounts[s(v, "name")], "plans.yaml") != p.get("plans") {
			continue
		}
		text := s(get("ConfigMap/"+cm), "data", "plans.yaml")
		if _, err := plans.LoadCatalogue([]byte(text)); err != nil {
			t.Errorf("ConfigMap %s: plans.yaml: %v", cm, err)
		}
		if text != string(readDeploy(t, "plans.yaml")) {
			t.Errorf("ConfigMap %s: plans.yaml differs from deploy/plans.yaml", cm)
		}
		planFileOK = true
	}
	if !planFileOK {
		t.Errorf("StatefulSet: --plans %q is not plans.yaml of a mounted ConfigMap", p.get("plans"))
	}

	pdb := get("PodDisruptionBudget/" + s(sts, "metadata", "name"))
	if s(pdb, "spec", "maxUnavailable") != "1" || !subset(m(pdb, "spec", "selector", "matchLabels"), labels) {
		t.Errorf("PodDisruptionBudget: want maxUnavailable 1 over the aggregators' pods")
	}

	// Every Service selects pods of a workload here and targets ports they
	// have.
	workloads := map[string]map[string]any{}
	for key, o := range objs {
		if strings.HasPrefix(key, "StatefulSet/") || strings.HasPrefix(key, "Deployment/") {
			workloads[key] = m(o, "spec", "template")
		}
	}
	for key, svc := range objs {
		if !strings.HasPrefix(key, "Service/") {
			continue
		}
		var target map[string]any
		for _, tpl := range workloads {
			if subset(m(svc, "spec", "selector"), m(tpl, "metadata", "labels")) {
				target = tpl
			}
		}
		if target == nil {
			t.Errorf("%s selects no pod of deploy/kubernetes", key)
			continue
		}
		have := map[string]string{}
		for _, c := range l(target, "spec", "containers") {
			for k, v := range containerPorts(m(c)) {
				have[k] = v
			}
		}
		for _, sp := range l(svc, "spec", "ports") {
			proto := s(sp, "protocol")
			if proto == "" {
				proto = "TCP"
			}
			if have[s(sp, "targetPort")] != s(sp, "port")+"/"+proto {
				t.Errorf("%s: port %s targets %q, which its pods have as %q", key, s(sp, "name"), s(sp, "targetPort"), have[s(sp, "targetPort")])
			}
		}
	}

	// The media server and its agent sidecar.
	dep := get("Deployment/media-server")
	dpod := m(dep, "spec", "template")
	if !subset(m(dep, "spec", "selector", "matchLabels"), m(dpod, "metadata", "labels")) {
		t.Errorf("Deployment media-server: its selector does not select its pods")
	}
	var agentArgs, mediaArgs parsedArgs
	var agentC map[string]any
	all := append(slices.Clone(l(dpod, "spec", "initContainers")), l(dpod, "spec", "containers")...)
	for _, c := range all {
		cp, _ := containerArgs(t, "media-server container "+s(c, "name"), m(c))
		switch cp.cmd {
		case "agent":
			agentArgs, agentC = cp, m(c)
		case "sim":
			mediaArgs = cp
		}
		if s(c, "image") != s(agg, "image") {
			t.Errorf("media-server container %s: image %q, the aggregators' %q", s(c, "name"), s(c, "image"), s(agg, "image"))
		}
		for _, probe := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
			if cmd := strs(l(c, probe, "exec", "command")); len(cmd) > 0 {
				hp := mustParse(t, s(c, "name")+" "+probe, cmd[1:])
				own := map[string]string{"agent": "api-addr", "sim": "status-addr"}[cp.cmd]
				if hp.cmd != "health" || hp.get("addr") != cp.get(own) {
					t.Errorf("%s %s: %v: want headroom health --addr %s", s(c, "name"), probe, cmd, cp.get(own))
				}
			}
		}
	}
	if agentArgs.set == nil || mediaArgs.set == nil {
		t.Fatal("Deployment media-server: want an agent container and a media server (headroom sim) beside it")
	}
	if s(agentC, "restartPolicy") != "Always" {
		t.Errorf("the agent: want a native sidecar (an init container with restartPolicy: Always)")
	}
	if host, _, _ := net.SplitHostPort(agentArgs.get("api-addr")); host != "127.0.0.1" || mediaArgs.get("agent") != agentArgs.get("api-addr") {
		t.Errorf("the media server calls --agent %q; the agent listens on %q: want the same loopback address", mediaArgs.get("agent"), agentArgs.get("api-addr"))
	}
	for _, srv := range agentArgs.list("server") {
		host, port, err := net.SplitHostPort(srv)
		if err != nil || !podNames[host] || port != p.port(t, "wire-addr") {
			t.Errorf("the agent: --server %q is not an aggregator's wire address", srv)
		}
	}
	host, port, _ := net.SplitHostPort(mediaArgs.get("aggregator"))
	api := objs["Service/"+host]
	found := false
	for _, sp := range l(api, "spec", "ports") {
		found = found || (s(sp, "port") == port && ports[s(sp, "targetPort")] == p.port(t, "http-addr")+"/TCP")
	}
	if !found {
		t.Errorf("the media server: --aggregator %q is not a Service port of the aggregators' HTTP API", mediaArgs.get("aggregator"))
	}
	vols := map[string]bool{}
	for _, v := range l(dpod, "spec", "volumes") {
		vols[s(v, "name")] = true
	}
	for _, c := range all {
		for _, vm := range l(c, "volumeMounts") {
			if !vols[s(vm, "name")] {
				t.Errorf("container %s mounts %q, which the pod does not define", s(c, "name"), s(vm, "name"))
			}
		}
	}
}

// TestDeploySystemd checks each unit under deploy/systemd: it runs the
// installed binary with the flags its env file gives, keeps its state in its
// StateDirectory, and is hardened.
func TestDeploySystemd(t *testing.T) {
	units, err := filepath.Glob(filepath.Join(deployDir, "systemd", "*.service"))
	if err != nil || len(units) < 2 {
		t.Fatalf("want units for an aggregator and an agent under deploy/systemd, found %v", units)
	}
	cmds := map[string]bool{}
	for _, u := range units {
		name := filepath.Base(u)
		keys := systemdKeys(t, u)
		for k, want := range map[string]string{
			"NoNewPrivileges": "yes", "ProtectSystem": "strict", "DynamicUser": "yes", "ProtectHome": "yes", "PrivateTmp": "yes",
		} {
			if got := keys["Service."+k]; len(got) == 0 || got[len(got)-1] != want {
				t.Errorf("%s: %s=%v, want %s", name, k, got, want)
			}
		}
		for _, k := range []string{"Restart", "StateDirectory", "EnvironmentFile", "ExecStart"} {
			if len(keys["Service."+k]) == 0 {
				t.Errorf("%s: no %s=", name, k)
			}
		}
		if len(keys["Service.ExecStart"]) == 0 || len(keys["Service.EnvironmentFile"]) == 0 || len(keys["Service.StateDirectory"]) == 0 {
			continue
		}
		words := strings.Fields(keys["Service.ExecStart"][0])
		if words[0] != "/usr/local/bin/headroom" {
			t.Errorf("%s: ExecStart runs %s", name, words[0])
		}
		envPath := keys["Service.EnvironmentFile"][0]
		env := envFile(t, filepath.Join(deployDir, "systemd", filepath.Base(envPath)))
		var argv []string
		for _, w := range words[1:] {
			if strings.HasPrefix(w, "$") {
				v, ok := env[strings.Trim(w, "${}")]
				if !ok {
					t.Errorf("%s: ExecStart uses %s, which %s does not set", name, w, envPath)
				}
				argv = append(argv, strings.Fields(v)...)
				continue
			}
			argv = append(argv, w)
		}
		p := mustParse(t, name, argv)
		cmds[p.cmd] = true
		if want := "/var/lib/" + keys["Service.StateDirectory"][0]; p.get("data-dir") != want {
			t.Errorf("%s: --data-dir %q, want its StateDirectory %s", name, p.get("data-dir"), want)
		}
		// The env file's other variables are ones the command reads.
		known := map[string]bool{}
		for _, c := range newApp().Commands {
			if c.Name == p.cmd {
				for _, f := range c.Flags {
					if ev, ok := f.(interface{ GetEnvVars() []string }); ok {
						for _, e := range ev.GetEnvVars() {
							known[e] = true
						}
					}
				}
			}
		}
		for k := range env {
			if !known[k] && !strings.Contains(keys["Service.ExecStart"][0], k) {
				t.Errorf("%s: %s sets %s, which headroom %s does not read", name, envPath, k, p.cmd)
			}
		}
	}
	if !cmds["aggregator"] || !cmds["agent"] {
		t.Errorf("units run %v: want an aggregator and an agent", cmds)
	}
}

// systemdKeys reads a unit file into "Section.Key" -> values in order.
func systemdKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf("%s: %q is not Key=Value", path, line)
			}
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

// envFile reads KEY=VALUE lines, as systemd's EnvironmentFile does.
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: %q is not KEY=VALUE", path, line)
		}
		out[k] = v
	}
	return out
}
