package waypoint

import (
	"fmt"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// PathNormalization is Istio's meshConfig.pathNormalization.normalization:
// what waypoints and ingress gateways do to a request's path before they
// route it, apply AuthorizationPolicies to it and forward it.
type PathNormalization string

const (
	// PathNormalizationNone: the path is matched and forwarded as received.
	PathNormalizationNone PathNormalization = "NONE"
	// PathNormalizationBase, the default (Istio's DEFAULT is the same):
	// RFC 3986 normalization: dot segments resolved, '\' read as '/',
	// escaped unreserved characters decoded; %00 rejected.
	PathNormalizationBase PathNormalization = "BASE"
	// PathNormalizationMergeSlashes: BASE, then "//" becomes "/".
	PathNormalizationMergeSlashes PathNormalization = "MERGE_SLASHES"
	// PathNormalizationDecodeAndMergeSlashes: %2F and %5C are decoded first
	// (to '/' and '\'), then MERGE_SLASHES.
	PathNormalizationDecodeAndMergeSlashes PathNormalization = "DECODE_AND_MERGE_SLASHES"
)

// ParsePathNormalization accepts Istio's names; "" and DEFAULT are BASE.
func ParsePathNormalization(s string) (PathNormalization, error) {
	switch p := PathNormalization(s); p {
	case "", "DEFAULT":
		return PathNormalizationBase, nil
	case PathNormalizationNone, PathNormalizationBase, PathNormalizationMergeSlashes, PathNormalizationDecodeAndMergeSlashes:
		return p, nil
	}
	return "", fmt.Errorf("%q: want NONE, BASE (or DEFAULT), MERGE_SLASHES or DECODE_AND_MERGE_SLASHES", s)
}

// setPathNormalization sets the HCM fields of mode as istiod does
// (pilot's HTTP connection manager builder). A mode Translate does not
// know is BASE: it never normalizes less than the default.
func setPathNormalization(hcm *hcmv3.HttpConnectionManager, mode PathNormalization) {
	hcm.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_KEEP_UNCHANGED
	switch mode {
	case PathNormalizationNone:
		hcm.NormalizePath = wrapperspb.Bool(false)
	case PathNormalizationMergeSlashes:
		hcm.NormalizePath, hcm.MergeSlashes = wrapperspb.Bool(true), true
	case PathNormalizationDecodeAndMergeSlashes:
		hcm.NormalizePath, hcm.MergeSlashes = wrapperspb.Bool(true), true
		hcm.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD
	default:
		hcm.NormalizePath = wrapperspb.Bool(true)
	}
}
