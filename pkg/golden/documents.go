package golden

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Documents returns every YAML document of the files matching glob as
// JSON, the form the API server stores and informers decode (fuzz seeds
// from golden inputs). Empty and comment-only documents are left out.
func Documents(tb testing.TB, glob string) [][]byte {
	tb.Helper()
	paths, err := filepath.Glob(glob)
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no inputs %s: %v", glob, err)
	}
	var docs [][]byte
	for _, p := range paths {
		docs = append(docs, fileDocuments(tb, p)...)
	}
	return docs
}

func fileDocuments(tb testing.TB, path string) [][]byte {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var docs [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return docs
		}
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		j, err := utilyaml.ToJSON(doc)
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		if j = bytes.TrimSpace(j); len(j) > 0 && string(j) != "null" {
			docs = append(docs, j)
		}
	}
}
