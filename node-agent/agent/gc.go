package agent

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// GCPercent is the node agent's garbage collection target (GOGC) when
// the environment sets none.
//
// Why 50 and not Go's 100: nearly all of the agent's heap is the mesh it
// holds (every workload, service and policy it is sent), live for as long
// as the agent runs, while its data path allocates little per connection.
// The collector lets the heap grow to (1 + GOGC/100) times what was live at
// the last collection before it collects again, and the process keeps
// about that much resident: holding 10,000 workloads, 1,000 services and
// 1,000 policies, 100 kept 55 MiB and 50 kept 48. The price is twice as
// many collections for the same allocation, each marking the whole mesh:
// at 1000 req/s it did not show in the agent's CPU, with keep-alive or
// with a new connection per request (docs/operations.md#gogc has both
// settings measured).
const GCPercent = 50

// SetGCPercent applies GCPercent unless GOGC is set in the environment
// (which the runtime has applied already). Process-wide: the command calls
// it, not Run, which tests call in their process.
func SetGCPercent(log *slog.Logger) {
	if v, set := os.LookupEnv("GOGC"); set {
		log.Info("garbage collection target from the environment", "GOGC", v)
		return
	}
	debug.SetGCPercent(GCPercent)
}
