package nginxrtmp

import (
	"encoding/xml"
	"fmt"
	"io"
	"math"
)

// MaxStatBody bounds the /stat page read (about 300 bytes per client: 16 MiB
// is some 50,000 clients).
const MaxStatBody = 16 << 20

// Stat is what the connector reads from nginx-rtmp's /stat page (rtmp_stat
// all): nginx's pid and uptime, and per application and stream its clients
// and the resolution of what is published.
type Stat struct {
	PID     int64   `xml:"pid"`
	Uptime  int64   `xml:"uptime"` // seconds
	Servers []sServ `xml:"server"`
}

type sServ struct {
	Apps []sApp `xml:"application"`
}

type sApp struct {
	Name    string    `xml:"name"`
	Streams []sStream `xml:"live>stream"`
}

type sStream struct {
	Name    string    `xml:"name"`
	Clients []sClient `xml:"client"`
	// Meta is present once the publisher sent the stream's metadata; an
	// audio-only stream has an empty <video/> in it.
	Meta *struct {
		Width  uint64 `xml:"video>width"`
		Height uint64 `xml:"video>height"`
	} `xml:"meta"`
}

type sClient struct {
	ID         uint64    `xml:"id"`
	Time       int64     `xml:"time"` // milliseconds since it connected
	Publishing *struct{} `xml:"publishing"`
}

// Client is one client of a stream, flattened.
type Client struct {
	App, Stream string
	ID          uint64
	Publishing  bool
	// AgeMs: milliseconds since it connected.
	AgeMs int64
	// Pixels of the stream's video (width × height), 0 if it has none;
	// Known is false while the stream's metadata has not arrived.
	Pixels uint64
	Known  bool
}

// ParseStat decodes a /stat page, reading at most MaxStatBody bytes.
func ParseStat(r io.Reader) (*Stat, error) {
	lr := &io.LimitedReader{R: r, N: MaxStatBody + 1}
	var st Stat
	dec := xml.NewDecoder(lr)
	if err := dec.Decode(&st); err != nil {
		if lr.N <= 0 {
			return nil, fmt.Errorf("nginx-rtmp stat: larger than %d bytes", MaxStatBody)
		}
		return nil, fmt.Errorf("nginx-rtmp stat: %w", err)
	}
	if st.PID == 0 {
		return nil, fmt.Errorf("nginx-rtmp stat: no <pid> (is the URL a location with rtmp_stat all?)")
	}
	return &st, nil
}

// Clients lists every client of every stream.
func (st *Stat) Clients() []Client {
	var out []Client
	for _, sv := range st.Servers {
		for _, app := range sv.Apps {
			for _, s := range app.Streams {
				known, px := s.Meta != nil, uint64(0)
				if known {
					px = pixels(s.Meta.Width, s.Meta.Height)
				}
				for _, c := range s.Clients {
					out = append(out, Client{App: app.Name, Stream: s.Name, ID: c.ID, Publishing: c.Publishing != nil,
						AgeMs: c.Time, Pixels: px, Known: known})
				}
			}
		}
	}
	return out
}

// pixels is w × h, saturating instead of wrapping on absurd sizes.
func pixels(w, h uint64) uint64 {
	if w != 0 && h > math.MaxUint64/w {
		return math.MaxUint64
	}
	return w * h
}
