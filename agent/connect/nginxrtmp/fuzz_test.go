package nginxrtmp

import (
	"net/url"
	"strconv"
	"testing"
)

// FuzzParseHook: ParseHook never panics, accepts only bodies with a known
// call and a numeric clientid, keeps at most maxArgs arguments and none of
// nginx-rtmp's own fields among them, and a hook it accepts decodes the
// same again from its re-encoding. The seeds (testdata/fuzz/FuzzParseHook)
// are bodies nginx-rtmp 1.2.2 sent on this machine.
func FuzzParseHook(f *testing.F) {
	f.Add([]byte("app=live&flashver=FMLE/3.0%20(compatible%3B%20Lavf59.27&swfurl=&tcurl=rtmp://127.0.0.1:19350/live&pageurl=&addr=127.0.0.1&clientid=1&call=publish&name=cam1&type=live&tenant=acme&session=s-1"))
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := ParseHook(body)
		if err != nil {
			return
		}
		if h.Call == "" || len(h.Args) > maxArgs {
			t.Fatalf("accepted %+v", h)
		}
		vs := url.Values{"call": {h.Call}, "clientid": {itoa(h.ClientID)}, "app": {h.App}, "name": {h.Name}, "addr": {h.Addr}}
		for k, v := range h.Args {
			if own[k] {
				t.Fatalf("own field %q among the arguments", k)
			}
			vs.Set(k, v)
		}
		h2, err := ParseHook([]byte(vs.Encode()))
		if err != nil || h2.Call != h.Call || h2.ClientID != h.ClientID || h2.Name != h.Name || len(h2.Args) != len(h.Args) {
			t.Fatalf("re-encoded %+v: %+v %v", h, h2, err)
		}
		for k, v := range h.Args {
			if h2.Args[k] != v {
				t.Fatalf("argument %q: %q then %q", k, v, h2.Args[k])
			}
		}
	})
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
