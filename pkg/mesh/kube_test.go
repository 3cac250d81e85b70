package mesh

import "testing"

func TestEnrolled(t *testing.T) {
	ambient := map[string]string{LabelDataplaneMode: "ambient"}
	none := map[string]string{LabelDataplaneMode: "none"}
	for _, tc := range []struct {
		name    string
		pod, ns map[string]string
		want    bool
	}{
		{"nothing", nil, nil, false},
		{"namespace", nil, ambient, true},
		{"pod", ambient, nil, true},
		{"pod opts out", none, ambient, false},
		{"unknown pod value follows namespace", map[string]string{LabelDataplaneMode: "sidecar"}, ambient, true},
		{"namespace none means nothing", nil, none, false},
	} {
		if got := Enrolled(tc.pod, tc.ns); got != tc.want {
			t.Errorf("%s: Enrolled = %v, want %v", tc.name, got, tc.want)
		}
	}
}
