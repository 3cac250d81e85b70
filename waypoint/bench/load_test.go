package bench

import (
	"net/http"

	"github.com/weft-mesh/weft/internal/benchkit"
)

// get is one GET of p's URL with c, as the load generators send it: a
// 200 with respSize bytes of body or an error.
func (p path) get(c *http.Client) func() error {
	return func() error { return benchkit.Get(c, p.url, respSize) }
}
