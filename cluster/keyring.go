package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// KeyringFile is the keyring's file in the data directory.
const KeyringFile = "gossip-keyring.json"

// Paths at which the aggregator mounts KeyringHandler and
// KeyringLocalHandler.
const (
	KeyringPath      = "/v1/keyring"
	KeyringLocalPath = "/v1/keyring/local"
)

// KeyringOp is a change of the keyring.
type KeyringOp string

// Keyring operations; KeyringList changes nothing.
const (
	KeyringList    KeyringOp = "list"
	KeyringInstall KeyringOp = "install" // add a key for decryption
	KeyringUse     KeyringOp = "use"     // encrypt with an installed key
	KeyringRemove  KeyringOp = "remove"  // drop a key that is not the primary
)

// Errors of the keyring.
var (
	ErrGossipUnencrypted = errors.New("cluster: gossip encryption is off on this server (start it with a gossip key)")
	// ErrKeyringRefused: a use or remove was refused before anything
	// changed, because some server is not ready for it.
	ErrKeyringRefused = errors.New("cluster: keyring change refused")
)

// ParseGossipKey decodes a gossip key given in standard base64 and checks
// its length.
func ParseGossipKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("gossip key: not standard base64: %v", err)
	}
	if err := memberlist.ValidateKey(k); err != nil {
		return nil, fmt.Errorf("gossip key: %d bytes; want 16, 24 or 32 (AES-128, -192 or -256)", len(k))
	}
	return k, nil
}

func encodeKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// keyringJSON is KeyringFile's content.
type keyringJSON struct {
	Keys []string `json:"keys"` // base64, the primary first
}

// loadKeyring reads the keyring in dir: found is false without a file.
func loadKeyring(dir string) (keys [][]byte, found bool, err error) {
	path := filepath.Join(dir, KeyringFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("cluster: gossip keyring: %w", err)
	}
	var k keyringJSON
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, false, fmt.Errorf("cluster: gossip keyring %s: %w", path, err)
	}
	if len(k.Keys) == 0 {
		return nil, false, fmt.Errorf("cluster: gossip keyring %s holds no key (delete it to run gossip unencrypted)", path)
	}
	for i, s := range k.Keys {
		key, err := ParseGossipKey(s)
		if err != nil {
			return nil, false, fmt.Errorf("cluster: gossip keyring %s, key %d: %w", path, i+1, err)
		}
		keys = append(keys, key)
	}
	return keys, true, nil
}

func writeKeyring(dir string, keys [][]byte) error {
	k := keyringJSON{}
	for _, key := range keys {
		k.Keys = append(k.Keys, encodeKey(key))
	}
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, KeyringFile), append(b, '\n'))
}

// openKeyring returns the keyring gossip starts with (nil: unencrypted).
func (n *Node) openKeyring() (*memberlist.Keyring, error) {
	keys, found, err := loadKeyring(n.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if !found {
		if n.cfg.GossipKey == nil {
			return nil, nil
		}
		keys = [][]byte{n.cfg.GossipKey}
		if err := writeKeyring(n.cfg.DataDir, keys); err != nil {
			return nil, fmt.Errorf("cluster: writing the gossip keyring: %w", err)
		}
	} else if n.cfg.GossipKey != nil && indexKey(keys, n.cfg.GossipKey) < 0 {
		n.log.Warn("the gossip keyring in the data directory does not hold the gossip key given; the keyring wins",
			"path", filepath.Join(n.cfg.DataDir, KeyringFile))
	}
	kr, err := memberlist.NewKeyring(keys[1:], keys[0])
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip keyring: %w", err)
	}
	return kr, nil
}

func indexKey(keys [][]byte, k []byte) int {
	for i, x := range keys {
		if bytes.Equal(x, k) {
			return i
		}
	}
	return -1
}

// KeyringStatus is one server's keyring, or why it could not be read or
// changed.
type KeyringStatus struct {
	ID      string   `json:"id"`
	Primary string   `json:"primary,omitempty"` // base64
	Keys    []string `json:"keys,omitempty"`    // base64, the primary first
	Error   string   `json:"error,omitempty"`
}

func (s KeyringStatus) has(key string) bool {
	for _, k := range s.Keys {
		if k == key {
			return true
		}
	}
	return false
}

// keyringLocked returns the keyring's keys, copied (memberlist hands out its
// own slice); keyMu must be held.
func (n *Node) keyringLocked() ([][]byte, error) {
	if n.ml == nil || n.mlKeyring == nil {
		return nil, ErrGossipUnencrypted
	}
	return append([][]byte(nil), n.mlKeyring.GetKeys()...), nil
}

func (n *Node) status(keys [][]byte) KeyringStatus {
	st := KeyringStatus{ID: string(n.id)}
	for _, k := range keys {
		st.Keys = append(st.Keys, encodeKey(k))
	}
	if len(st.Keys) > 0 {
		st.Primary = st.Keys[0]
	}
	return st
}

// LocalKeyring returns this server's keyring.
func (n *Node) LocalKeyring() (KeyringStatus, error) {
	n.keyMu.Lock()
	defer n.keyMu.Unlock()
	keys, err := n.keyringLocked()
	if err != nil {
		return KeyringStatus{ID: string(n.id)}, err
	}
	return n.status(keys), nil
}

// ChangeLocalKeyring changes this server's keyring and records it in the
// data directory before memberlist uses it. Install of a key already there
// and use of the primary change nothing; use of a key not installed, and
// remove of the primary, are errors.
func (n *Node) ChangeLocalKeyring(op KeyringOp, key []byte) (KeyringStatus, error) {
	n.keyMu.Lock()
	defer n.keyMu.Unlock()
	st := KeyringStatus{ID: string(n.id)}
	keys, err := n.keyringLocked()
	if err != nil {
		return st, err
	}
	if err := memberlist.ValidateKey(key); err != nil {
		return st, fmt.Errorf("gossip key of %d bytes: want 16, 24 or 32", len(key))
	}
	i := indexKey(keys, key)
	var next [][]byte
	switch op {
	case KeyringInstall:
		next = keys
		if i < 0 {
			next = append(next, key)
		}
	case KeyringUse:
		if i < 0 {
			return st, errors.New("the key is not installed on this server")
		}
		next = append([][]byte{key}, append(append([][]byte(nil), keys[:i]...), keys[i+1:]...)...)
	case KeyringRemove:
		switch {
		case i == 0:
			return st, errors.New("the key is this server's primary key; use another one first")
		case i < 0:
			return n.status(keys), nil
		}
		next = append(append([][]byte(nil), keys[:i]...), keys[i+1:]...)
	default:
		return st, fmt.Errorf("keyring operation %q: want install, use or remove", op)
	}
	if slices.EqualFunc(next, keys, bytes.Equal) {
		return n.status(keys), nil // already so
	}
	if err := writeKeyring(n.cfg.DataDir, next); err != nil {
		return st, fmt.Errorf("recording the keyring: %w", err)
	}
	kr := n.mlKeyring
	switch op {
	case KeyringInstall:
		err = kr.AddKey(key)
	case KeyringUse:
		err = kr.UseKey(key)
	case KeyringRemove:
		err = removeKey(kr, keys, i)
	}
	if err != nil {
		return st, err
	}
	n.log.Info("gossip keyring changed", "op", string(op), "keys", len(next))
	return n.status(next), nil
}

// removeKey removes keys[i] (i > 0) from kr, whose keys are keys.
// Memberlist's RemoveKey shifts the keys after the removed one in place,
// under the feet of goroutines decrypting with the slice it handed them;
// removing the last key moves nothing. So the keys after keys[i] are
// removed from the end, then keys[i], then they are installed again (a
// moment in which they cannot decrypt; they are not the primary).
func removeKey(kr *memberlist.Keyring, keys [][]byte, i int) error {
	for j := len(keys) - 1; j >= i; j-- {
		if err := kr.RemoveKey(keys[j]); err != nil {
			return err
		}
	}
	for _, k := range keys[i+1:] {
		if err := kr.AddKey(k); err != nil {
			return err
		}
	}
	return nil
}

// KeyringResult is the outcome of KeyringAll: every server's keyring after
// the operation, or the error it met.
type KeyringResult struct {
	Op      KeyringOp       `json:"op"`
	Servers []KeyringStatus `json:"servers"`
	Failed  int             `json:"failed"`
}

func (r *KeyringResult) failures() string {
	var parts []string
	for _, s := range r.Servers {
		if s.Error != "" {
			parts = append(parts, s.ID+": "+s.Error)
		}
	}
	return strings.Join(parts, "; ")
}

// keyringTarget is a server a keyring operation reaches.
type keyringTarget struct {
	id, http string
	self     bool
}

// keyringTargets are this server and every other one that is alive in
// gossip or in the Raft configuration, with a known HTTP address.
func (n *Node) keyringTargets() []keyringTarget {
	n.Members() // records the Raft configuration in the member table
	var out []keyringTarget
	for _, r := range n.members.all() {
		switch {
		case r.id == string(n.id):
			out = append(out, keyringTarget{id: r.id, self: true})
		case r.status == StatusLeft || (r.status != StatusAlive && !r.inRaft):
		default:
			out = append(out, keyringTarget{id: r.id, http: r.meta.HTTP})
		}
	}
	return out
}

// KeyringAll lists (KeyringList) or changes the keyring of every server
// (see the package's keyring notes). The error is ErrKeyringRefused
// (wrapped, nothing changed) when a use or remove is refused, and
// otherwise says which servers failed; the result lists every server
// either way.
func (n *Node) KeyringAll(ctx context.Context, op KeyringOp, key []byte) (KeyringResult, error) {
	return n.keyringAll(ctx, op, key, "")
}

// keyringAll is KeyringAll, sending auth (when not "") as the Authorization
// header of the calls to the other servers: the operator's credentials
// reach every server.
func (n *Node) keyringAll(ctx context.Context, op KeyringOp, key []byte, auth string) (KeyringResult, error) {
	switch op {
	case KeyringList, KeyringInstall, KeyringUse, KeyringRemove:
	default:
		return KeyringResult{Op: op}, fmt.Errorf("keyring operation %q: want list, install, use or remove", op)
	}
	targets := n.keyringTargets()
	if op == KeyringUse || op == KeyringRemove {
		pre := n.keyringEach(ctx, targets, KeyringList, nil, auth)
		pre.Op = op
		k := encodeKey(key)
		var why []string
		for _, s := range pre.Servers {
			switch {
			case op == KeyringUse && s.Error != "":
				why = append(why, s.ID+" did not answer: "+s.Error)
			case op == KeyringUse && !s.has(k):
				why = append(why, s.ID+" does not hold the key (install it first)")
			case op == KeyringRemove && s.Error == "" && s.Primary == k:
				why = append(why, s.ID+" uses the key as its primary (use another one first)")
			}
		}
		if len(why) > 0 {
			return pre, fmt.Errorf("%w: %s", ErrKeyringRefused, strings.Join(why, "; "))
		}
	}
	res := n.keyringEach(ctx, targets, op, key, auth)
	if res.Failed > 0 {
		return res, fmt.Errorf("keyring %s failed on %d of %d servers: %s", op, res.Failed, len(res.Servers), res.failures())
	}
	return res, nil
}

// keyringEach runs op on every target at once.
func (n *Node) keyringEach(ctx context.Context, targets []keyringTarget, op KeyringOp, key []byte, auth string) KeyringResult {
	res := KeyringResult{Op: op, Servers: make([]KeyringStatus, len(targets))}
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var (
				st  KeyringStatus
				err error
			)
			switch {
			case t.self && op == KeyringList:
				st, err = n.LocalKeyring()
			case t.self:
				st, err = n.ChangeLocalKeyring(op, key)
			case t.http == "":
				err = errors.New("no HTTP address known")
			default:
				st, err = n.callKeyring(ctx, t.http, op, key, auth)
			}
			st.ID = t.id
			if err != nil {
				st.Error = err.Error()
			}
			res.Servers[i] = st
		}()
	}
	wg.Wait()
	for _, s := range res.Servers {
		if s.Error != "" {
			res.Failed++
		}
	}
	sort.Slice(res.Servers, func(i, j int) bool { return res.Servers[i].ID < res.Servers[j].ID })
	return res
}

// keyringRequest is the body of POST KeyringPath and KeyringLocalPath.
type keyringRequest struct {
	Op  KeyringOp `json:"op"`
	Key string    `json:"key"`
}

// callKeyring runs op on the server whose HTTP API is at httpAddr.
func (n *Node) callKeyring(ctx context.Context, httpAddr string, op KeyringOp, key []byte, auth string) (KeyringStatus, error) {
	var st KeyringStatus
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	method, body := http.MethodGet, io.Reader(nil)
	if op != KeyringList {
		b, _ := json.Marshal(keyringRequest{Op: op, Key: encodeKey(key)})
		method, body = http.MethodPost, bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.scheme+"://"+httpAddr+KeyringLocalPath, body)
	if err != nil {
		return st, err
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{Transport: n.transport}).Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return st, errors.New(e.Error)
		}
		return st, fmt.Errorf("%s%s: %s", httpAddr, KeyringLocalPath, resp.Status)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("%s%s: %w", httpAddr, KeyringLocalPath, err)
	}
	return st, nil
}

// readKeyringRequest decodes a POST body: an operation and a key.
func readKeyringRequest(w http.ResponseWriter, r *http.Request) (KeyringOp, []byte, error) {
	var req keyringRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		return "", nil, errors.New(`want {"op":"install|use|remove","key":"BASE64"}`)
	}
	switch req.Op {
	case KeyringInstall, KeyringUse, KeyringRemove:
	default:
		return "", nil, fmt.Errorf("op %q: want install, use or remove", req.Op)
	}
	key, err := ParseGossipKey(req.Key)
	if err != nil {
		return "", nil, err
	}
	return req.Op, key, nil
}

// KeyringLocalHandler serves this server's own keyring: GET lists it, POST
// {"op":"install|use|remove","key":"BASE64"} changes it (ChangeLocalKeyring).
// Answers: 200 KeyringStatus; 400 a bad body or a change refused; 409 when
// gossip is not encrypted. Under mutual TLS only servers may call it. The
// aggregator mounts it at KeyringLocalPath; KeyringAll calls it.
func (n *Node) KeyringLocalHandler() http.Handler {
	return n.serversOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var (
			st  KeyringStatus
			err error
		)
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			st, err = n.LocalKeyring()
		case http.MethodPost:
			op, key, perr := readKeyringRequest(w, r)
			if perr != nil {
				writeJSON(w, http.StatusBadRequest, errorBody{Error: perr.Error()})
				return
			}
			st, err = n.ChangeLocalKeyring(op, key)
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "method not allowed"})
			return
		}
		switch {
		case errors.Is(err, ErrGossipUnencrypted):
			writeJSON(w, http.StatusConflict, errorBody{Error: err.Error()})
		case err != nil:
			writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
		default:
			writeJSON(w, http.StatusOK, st)
		}
	}))
}

// keyringAnswer is the body of KeyringHandler's answers.
type keyringAnswer struct {
	Error string `json:"error,omitempty"`
	KeyringResult
}

// KeyringHandler serves every server's keyring: GET lists them, POST
// {"op":"install|use|remove","key":"BASE64"} changes them all (KeyringAll).
// Answers: 200 {"op","servers":[KeyringStatus...],"failed":0}; 400 a bad
// body; 409 with the same body plus "error" when a use or remove is
// refused (nothing changed); 502 plus "error" when some servers failed.
// The request's Authorization header goes with the calls to the other
// servers. The aggregator mounts it at KeyringPath.
func (n *Node) KeyringHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op, key := KeyringList, []byte(nil)
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodPost:
			var err error
			if op, key, err = readKeyringRequest(w, r); err != nil {
				writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
				return
			}
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "method not allowed"})
			return
		}
		res, err := n.keyringAll(r.Context(), op, key, r.Header.Get("Authorization"))
		switch {
		case errors.Is(err, ErrKeyringRefused):
			writeJSON(w, http.StatusConflict, keyringAnswer{Error: err.Error(), KeyringResult: res})
		case err != nil:
			writeJSON(w, http.StatusBadGateway, keyringAnswer{Error: err.Error(), KeyringResult: res})
		default:
			writeJSON(w, http.StatusOK, keyringAnswer{KeyringResult: res})
		}
	})
}
