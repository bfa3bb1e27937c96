// package web is the aggregator's dashboard: a page with its script and
// style (index.html, app.js, app.css), embedded in the binary and served
// by Routes at / and /ui/. The page reads the same JSON API as any client.
//
// Contract: it imports only internal/jsonhttp of ours; the assets are read
// once at start and only read afterwards, so Routes' handlers are safe for
// concurrent use.
package web
