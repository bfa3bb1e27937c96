package api

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/headroom-rtc/headroom/aggregator/web"
)

// TestWebPublicUnderACL: the page and its files load without a token; the
// page then asks for one for the API.
func TestWebPublicUnderACL(t *testing.T) {
	mux := http.NewServeMux()
	web.Routes(mux)
	for _, path := range []string{"/", "/ui/app.js"} {
		_, pattern := mux.Handler(httptest.NewRequest("GET", path, nil))
		if routeAccess(pattern) != accessPublic {
			t.Errorf("GET %s (pattern %q) is not public", path, pattern)
		}
	}
}
