package workload

// ScaleInputs lets the external benchmarks (waypoint_bench_test.go) build
// the same cluster as this package's.
var ScaleInputs = scaleInputs
