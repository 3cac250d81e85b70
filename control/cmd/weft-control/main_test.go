package main

import "testing"

func TestCheckOTLPEndpoint(t *testing.T) {
	for s, ok := range map[string]bool{
		"": true,
		"http://otel-collector.observability:4318": true,
		"https://collector.example.org":            true,
		"http://10.0.0.1:4318/":                    true,
		"otel-collector:4318":                      false,
		"grpc://collector:4317":                    false,
		"http://":                                  false,
		"http://a b":                               false,
	} {
		if err := checkOTLPEndpoint(s); (err == nil) != ok {
			t.Errorf("checkOTLPEndpoint(%q) = %v, want ok=%v", s, err, ok)
		}
	}
}
