package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The conflist is edited as text, not re-marshalled: key order, indentation
// and every field weft does not own stay byte for byte, and removing weft's
// entry gives back exactly the bytes there were before it was added.

// span is a byte range [start, end) of one JSON value in a document.
type span struct{ start, end int }

// valueSpans decodes a JSON object or array and returns the span of each
// member value (keys are returned for objects, "" for arrays), relative to
// data.
func valueSpans(data []byte) (keys []string, spans []span, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	delim, ok := tok.(json.Delim)
	if !ok || (delim != '{' && delim != '[') {
		return nil, nil, fmt.Errorf("want a JSON object or array, found %v", tok)
	}
	for dec.More() {
		key := ""
		if delim == '{' {
			tok, err := dec.Token()
			if err != nil {
				return nil, nil, err
			}
			key, _ = tok.(string)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, err
		}
		end := int(dec.InputOffset())
		keys = append(keys, key)
		spans = append(spans, span{end - len(raw), end})
	}
	if _, err := dec.Token(); err != nil { // closing delimiter
		return nil, nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("trailing data after the JSON document")
	}
	return keys, spans, nil
}

// conflistDoc is a parsed conflist with the location of its plugin entries.
type conflistDoc struct {
	data    []byte
	plugins span   // the "plugins" array, brackets included
	entries []span // each plugin, absolute offsets
	types   []string
}

func parseConflist(data []byte) (*conflistDoc, error) {
	keys, spans, err := valueSpans(data)
	if err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	doc := &conflistDoc{data: data, plugins: span{-1, -1}}
	for i, k := range keys {
		if k == "plugins" {
			doc.plugins = spans[i]
		}
	}
	if doc.plugins.start < 0 {
		return nil, errors.New(`no "plugins" list: not a CNI network configuration list`)
	}
	arr := data[doc.plugins.start:doc.plugins.end]
	if len(arr) == 0 || arr[0] != '[' {
		return nil, errors.New(`"plugins" is not a list`)
	}
	_, entries, err := valueSpans(arr)
	if err != nil {
		return nil, fmt.Errorf(`"plugins": %w`, err)
	}
	for i, e := range entries {
		var p struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(arr[e.start:e.end], &p); err != nil {
			return nil, fmt.Errorf("plugins[%d] is not an object: %w", i, err)
		}
		if p.Type == "" {
			return nil, fmt.Errorf(`plugins[%d] has no "type"`, i)
		}
		doc.entries = append(doc.entries, span{doc.plugins.start + e.start, doc.plugins.start + e.end})
		doc.types = append(doc.types, p.Type)
	}
	if len(doc.entries) == 0 {
		return nil, errors.New(`"plugins" is empty: there is no main plugin to chain onto`)
	}
	return doc, nil
}

// removeEntries returns data without the plugin entries whose type is typ,
// each taken out together with the separator that joined it to its
// neighbour, so that remove(append(x)) == x.
func removeEntries(data []byte, typ string) ([]byte, int, error) {
	removed := 0
	for {
		doc, err := parseConflist(data)
		if err != nil {
			if removed > 0 && strings.Contains(err.Error(), "is empty") {
				return data, removed, nil
			}
			return nil, removed, err
		}
		idx := -1
		for i, t := range doc.types {
			if t == typ {
				idx = i
				break
			}
		}
		if idx < 0 {
			return data, removed, nil
		}
		var cut span
		switch {
		case idx > 0: // from the end of the previous entry: ",<ws><entry>"
			cut = span{doc.entries[idx-1].end, doc.entries[idx].end}
		case len(doc.entries) > 1: // first of several: "<entry>,<ws>"
			cut = span{doc.entries[0].start, doc.entries[1].start}
		default:
			cut = doc.entries[0]
		}
		out := make([]byte, 0, len(data))
		out = append(out, data[:cut.start]...)
		out = append(out, data[cut.end:]...)
		data = out
		removed++
	}
}

// appendEntry adds entry (a JSON object) as the last plugin, formatted like
// the entries already there: same separator whitespace, same indentation.
func appendEntry(data []byte, entry any) ([]byte, error) {
	doc, err := parseConflist(data)
	if err != nil {
		return nil, err
	}
	last := doc.entries[len(doc.entries)-1]
	// Separator: what came between the previous two entries, or, with one
	// entry, the whitespace between '[' and it.
	var sep string
	if n := len(doc.entries); n > 1 {
		sep = string(data[doc.entries[n-2].end:doc.entries[n-1].start])
	} else {
		sep = "," + string(data[doc.plugins.start+1:doc.entries[0].start])
	}
	if strings.TrimSpace(sep) != "," {
		sep = ", "
	}
	var body []byte
	if i := strings.LastIndexByte(sep, '\n'); i >= 0 {
		indent := sep[i+1:]
		body, err = json.MarshalIndent(entry, indent, indentUnit(data, indent))
	} else {
		body, err = json.Marshal(entry)
	}
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(data)+len(sep)+len(body))
	out = append(out, data[:last.end]...)
	out = append(out, sep...)
	out = append(out, body...)
	out = append(out, data[last.end:]...)
	return out, nil
}

// indentUnit guesses one level of indentation from the document: the
// indentation of its first indented line, else two spaces.
func indentUnit(data []byte, fallbackFrom string) string {
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed != "" && len(trimmed) < len(line) {
			return line[:len(line)-len(trimmed)]
		}
	}
	if strings.HasPrefix(fallbackFrom, "\t") {
		return "\t"
	}
	return "  "
}
