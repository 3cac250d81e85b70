package bpf

// clang-19 is pinned on purpose: the committed object is only reproducible
// with the same compiler, and CI compares it with a fresh build. bpf2go
// derives llvm-strip-19 from the compiler name. Only little-endian (bpfel)
// output is generated: amd64 and arm64 both use it.
//
//go:generate go tool bpf2go -cc clang-19 -target bpfel -type enrolment -type listener -type lpm_v4_key capture capture.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
