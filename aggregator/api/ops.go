package api

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/headroom-rtc/headroom/aggregator/fsm"

	"github.com/hashicorp/raft"

	"github.com/headroom-rtc/headroom/cluster"
	"github.com/headroom-rtc/headroom/internal/jsonhttp"
	"github.com/headroom-rtc/headroom/plans"
)

// maxSnapshotUpload bounds a snapshot sent for restore.
const maxSnapshotUpload = 4 << 30

func (s *Server) opsRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/members", s.handleMembers)
	mux.HandleFunc("GET /v1/raft/peers", s.handlePeers)
	mux.HandleFunc("DELETE /v1/raft/peers/{id}", s.leaderOnly(s.handleRemovePeer))
	mux.Handle("GET "+cluster.StatsPath, s.node.StatsHandler())
	mux.Handle("POST "+cluster.RemovePeerPath, s.node.RemovePeerHandler())
	mux.Handle("GET "+cluster.KeyringPath, s.node.KeyringHandler())
	mux.Handle("POST "+cluster.KeyringPath, s.node.KeyringHandler())
	mux.Handle("GET "+cluster.KeyringLocalPath, s.node.KeyringLocalHandler())
	mux.Handle("POST "+cluster.KeyringLocalPath, s.node.KeyringLocalHandler())
	mux.HandleFunc("POST /v1/leave", s.handleLeave)
	mux.HandleFunc("GET /v1/snapshot", s.handleSnapshotSave)
	mux.HandleFunc("PUT /v1/snapshot", s.leaderOnly(s.handleSnapshotRestore))
}

// MemberJSON is one element of GET /v1/members.
type MemberJSON struct {
	ID     string `json:"id"`
	Gossip string `json:"gossip_addr"`
	Status string `json:"status"`
	Since  string `json:"status_since"`
	Role   string `json:"raft_role"`
	Leader bool   `json:"leader"`
	Wire   string `json:"wire_addr"`
	Raft   string `json:"raft_addr"`
	HTTP   string `json:"http_addr"`
}

func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request) {
	out := []MemberJSON{}
	for _, m := range s.node.Members() {
		role := string(m.Raft)
		if role == "" {
			role = "none"
		}
		out = append(out, MemberJSON{ID: m.ID, Gossip: m.GossipAddr, Status: string(m.Status), Since: m.StatusSince.UTC().Format(time.RFC3339),
			Role: role, Leader: m.Leader, Wire: m.Meta.Wire, Raft: m.Meta.Raft, HTTP: m.Meta.HTTP})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	jsonhttp.Write(w, http.StatusOK, out)
}

// PeerJSON is one element of GET /v1/raft/peers.
type PeerJSON struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
}

func (s *Server) handlePeers(w http.ResponseWriter, r *http.Request) {
	f := s.node.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		jsonhttp.Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	_, leader := s.node.Raft.LeaderWithID()
	out := []PeerJSON{}
	for _, srv := range f.Configuration().Servers {
		out = append(out, PeerJSON{ID: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter, Leader: srv.ID == leader})
	}
	jsonhttp.Write(w, http.StatusOK, out)
}

func (s *Server) handleRemovePeer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := plans.ValidateID("server", id, plans.MaxIDLen); err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.node.RemovePeer(id); err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	jsonhttp.Write(w, http.StatusOK, map[string]string{"removed": id})
}

// handleLeave takes this server out of the cluster at once and stops it.
func (s *Server) handleLeave(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := s.node.Leave(ctx); err != nil {
		jsonhttp.Error(w, http.StatusInternalServerError, "leave: "+err.Error())
		return
	}
	jsonhttp.Write(w, http.StatusOK, map[string]string{"left": s.node.ID()})
	s.leftOnce.Do(func() { close(s.left) })
}

// handleSnapshotSave takes a Raft snapshot of this server's state and
// streams it as a snapshot file (fsm/snapfile.go).
func (s *Server) handleSnapshotSave(w http.ResponseWriter, r *http.Request) {
	hdr, rc, err := s.OpenSnapshot()
	if err != nil {
		jsonhttp.Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer rc.Close()
	pre, err := fsm.SnapshotPreamble(hdr)
	if err != nil {
		jsonhttp.Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(int64(len(pre))+hdr.Size+int64(fsm.SnapshotSumLen), 10))
	w.Header().Set("X-Headroom-Index", strconv.FormatUint(hdr.Index, 10))
	if _, err := fsm.WriteSnapshotFile(w, hdr, rc); err != nil {
		s.log.Warn("sending a snapshot", "error", err)
	}
}

// handleSnapshotRestore replaces the whole cluster's state with a saved
// snapshot file. The whole file is checked first — its checksum, and that
// the state decodes — and a bad one changes nothing.
func (s *Server) handleSnapshotRestore(w http.ResponseWriter, r *http.Request) {
	tmp, err := os.CreateTemp(s.cfg.DataDir, "restore-*.snap")
	if err != nil {
		jsonhttp.Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, http.MaxBytesReader(w, r.Body, maxSnapshotUpload))
	if err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, "reading the snapshot: "+err.Error())
		return
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		jsonhttp.Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	rd, err := fsm.ReadSnapshotFile(tmp, func(state io.Reader) error { return fsm.NewFSM(nil).Restore(io.NopCloser(state)) })
	if err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, "refused, nothing changed: not a good headroom snapshot: "+err.Error())
		return
	}
	size := rd.Size
	if rd.Legacy {
		size = n
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}
	if err := s.node.Raft.Restore(meta, io.NewSectionReader(tmp, rd.Offset, size), time.Minute); err != nil {
		code := http.StatusInternalServerError
		if isNotLeader(err) {
			code = http.StatusServiceUnavailable
		}
		jsonhttp.Error(w, code, "restore: "+err.Error())
		return
	}
	checksum := "ok"
	if rd.Legacy {
		checksum = "none (a file saved before snapshots had checksums)"
	}
	s.log.Warn("state replaced from an uploaded snapshot", "bytes", n, "checksum", checksum, "file", filepath.Base(tmp.Name()))
	jsonhttp.Write(w, http.StatusOK, map[string]any{"restored_bytes": n, "index": s.node.Raft.AppliedIndex(), "checksum": checksum})
}
