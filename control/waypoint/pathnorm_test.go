package waypoint

import (
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/weft-mesh/weft/control/xds"
)

func TestParsePathNormalization(t *testing.T) {
	for in, want := range map[string]PathNormalization{
		"": PathNormalizationBase, "DEFAULT": PathNormalizationBase, "BASE": PathNormalizationBase,
		"NONE": PathNormalizationNone, "MERGE_SLASHES": PathNormalizationMergeSlashes,
		"DECODE_AND_MERGE_SLASHES": PathNormalizationDecodeAndMergeSlashes,
	} {
		if got, err := ParsePathNormalization(in); got != want || err != nil {
			t.Errorf("ParsePathNormalization(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"base", "MERGE", "decode_and_merge_slashes"} {
		if got, err := ParsePathNormalization(in); err == nil {
			t.Errorf("ParsePathNormalization(%q) = %q, want an error", in, got)
		}
	}
}

// TestPathNormalizationHCM: every HTTP connection manager of waypoints and
// ingress gateways (plain and TLS ports) carries Istio's fields for the
// configured mode.
func TestPathNormalizationHCM(t *testing.T) {
	type fields struct {
		normalize, merge bool
		escaped          hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction
	}
	keep, unescape := hcmv3.HttpConnectionManager_KEEP_UNCHANGED, hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD
	for mode, want := range map[PathNormalization]fields{
		"":                                     {true, false, keep},
		PathNormalizationNone:                  {false, false, keep},
		PathNormalizationBase:                  {true, false, keep},
		PathNormalizationMergeSlashes:          {true, true, keep},
		PathNormalizationDecodeAndMergeSlashes: {true, true, unescape},
	} {
		seen := map[string]int{}
		for _, dir := range []string{"testdata/ingress-bookinfo", "testdata/ingress-tls"} {
			tc := loadCase(t, dir)
			out := Translate(Config{PathNormalization: mode}, tc.in)
			snaps := map[string]map[string]*xds.Resources{"waypoint": out.Waypoints, "gateway": out.GatewayProxies}
			for kind, byName := range snaps {
				for name, res := range byName {
					for _, l := range res.Listeners {
						for _, fc := range l.GetFilterChains() {
							hcm := &hcmv3.HttpConnectionManager{}
							if fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm) != nil {
								continue // tcp_proxy
							}
							seen[kind]++
							got := fields{hcm.GetNormalizePath().GetValue(), hcm.GetMergeSlashes(), hcm.GetPathWithEscapedSlashesAction()}
							if hcm.GetNormalizePath() == nil || got != want {
								t.Errorf("mode %q: %s %s chain %s: %+v (normalize_path set: %v), want %+v",
									mode, kind, name, fc.GetName(), got, hcm.GetNormalizePath() != nil, want)
							}
						}
					}
				}
			}
		}
		if seen["waypoint"] == 0 || seen["gateway"] == 0 {
			t.Fatalf("mode %q: checked %v HTTP connection managers; want waypoints and gateways", mode, seen)
		}
	}
}
