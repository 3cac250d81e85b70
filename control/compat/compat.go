// Package compat is the registry of what Weft does with each part of
// Istio's ambient-mode API: one Entry per feature, with its status and
// notes, grouped in the Sections of docs/compatibility.md. The page is
// generated from it (Page; `go test ./control/compat -run
// TestCompatibilityPage -update` rewrites the file), so it has one source.
//
// The hand-written page kept contradicting the code (issue #20), so an
// entry about a field of an Istio or Gateway API object carries Probes:
// each one object using the field and what the translation must do with it,
// report a problem naming the field or accept it cleanly. The package's
// tests run every probe through control/workload and control/waypoint, as
// weft-control does, and fail when a row claims what the code does not do.
package compat

import (
	"bytes"
	_ "embed"
	"fmt"
	"strings"
	"text/template"
)

// Status is how far Weft implements a feature.
type Status int

// Statuses, as the page's intro defines them.
const (
	// Supported behaves as in Istio ambient.
	Supported Status = iota + 1
	// Partial works, with the gaps named in the notes.
	Partial
	// NotYet has no effect; what Weft does instead is in the notes.
	NotYet
	// NotApplicable has no meaning in ambient mode.
	NotApplicable
	// Tested names the versions the tests run on (the Kubernetes row).
	Tested
)

func (s Status) String() string {
	switch s {
	case Supported:
		return "Supported"
	case Partial:
		return "Partial"
	case NotYet:
		return "Not yet"
	case NotApplicable:
		return "Not applicable"
	case Tested:
		return "Tested"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Section is one table of the page.
type Section struct {
	// Title is the section's heading; page.md.tmpl places the table by it.
	Title string
	// FirstColumn heads the feature column; "feature" if empty.
	FirstColumn string
	// Equivalent, if set, makes the table two columns, the Istio feature
	// and Weft's equivalent headed Equivalent: the entry's notes, after
	// its status unless it is Supported.
	Equivalent string
	Entries    []Entry
}

// Entry is one row of the page.
type Entry struct {
	// Feature is the Istio feature, markdown.
	Feature string
	Status  Status
	// Qualifier follows the status in its cell, e.g. "(as Istio)".
	Qualifier string
	// Notes are the details, markdown; may be empty.
	Notes string
	// Probes, if any, are checked against the translation by the tests:
	// one per claim of the row worth checking.
	Probes []*Probe
}

// Expectation is what the translation must do with a probe's object.
type Expectation int

// Expectations.
const (
	// Reported: a problem on the object has Probe.Message in its message.
	Reported Expectation = iota + 1
	// Clean: no problem on the object.
	Clean
)

// Probe is one Istio or Gateway API object that exercises an entry's
// feature, and what the translation must do with it. The object is
// translated with a small fixed world (Service default/reviews behind the
// waypoint default/waypoint; see the tests).
type Probe struct {
	// Object is the YAML of one AuthorizationPolicy, PeerAuthentication, RequestAuthentication,
	// ServiceEntry, VirtualService, DestinationRule, Istio Gateway,
	// HTTPRoute or Gateway API Gateway, decoded strictly.
	Object string
	Expect Expectation
	// Message is a substring of the expected problem's message, usually
	// the field's path; only with Reported.
	Message string
}

// reported is a probe whose object the translation must report with a
// message containing message.
func reported(object, message string) *Probe {
	return &Probe{Object: object, Expect: Reported, Message: message}
}

// clean is a probe whose object the translation must accept without a
// problem.
func clean(object string) *Probe {
	return &Probe{Object: object, Expect: Clean}
}

// Sections are the page's tables, in page order.
var Sections = []Section{enrolment, security, traffic, httpBehaviour, otherAPIs, tooling, platform}

// pageTemplate is the page's prose, with a {{table "<title>"}} where each
// section's table goes.
//
//go:embed page.md.tmpl
var pageTemplate string

// Page renders docs/compatibility.md from Sections. It fails if the
// template names a section Sections lacks or leaves one out.
func Page() ([]byte, error) {
	rendered := map[string]bool{}
	funcs := template.FuncMap{"table": func(title string) (string, error) {
		for _, s := range Sections {
			if s.Title == title {
				rendered[title] = true
				return s.table(), nil
			}
		}
		return "", fmt.Errorf("no section %q", title)
	}}
	tmpl, err := template.New("page.md.tmpl").Funcs(funcs).Parse(pageTemplate)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, nil); err != nil {
		return nil, err
	}
	for _, s := range Sections {
		if !rendered[s.Title] {
			return nil, fmt.Errorf("page.md.tmpl has no table for section %q", s.Title)
		}
	}
	return b.Bytes(), nil
}

// table is the section's markdown table, without the final newline.
func (s Section) table() string {
	first := s.FirstColumn
	if first == "" {
		first = "feature"
	}
	var lines []string
	if s.Equivalent != "" {
		lines = append(lines, "| "+first+" | "+s.Equivalent+" |", "|---|---|")
	} else {
		lines = append(lines, "| "+first+" | status | notes |", "|---|---|---|")
	}
	for _, e := range s.Entries {
		if s.Equivalent != "" {
			lines = append(lines, row(e.Feature, e.equivalent()))
		} else {
			lines = append(lines, row(e.Feature, e.status(), e.Notes))
		}
	}
	return strings.Join(lines, "\n")
}

// row is a table row; an empty cell is "| |".
func row(cells ...string) string {
	var b strings.Builder
	for _, c := range cells {
		b.WriteString("| ")
		if c != "" {
			b.WriteString(c + " ")
		}
	}
	b.WriteString("|")
	return b.String()
}

// status is the entry's status cell.
func (e Entry) status() string {
	if e.Qualifier == "" {
		return e.Status.String()
	}
	return e.Status.String() + " " + e.Qualifier
}

// equivalent is the entry's cell in a two-column table.
func (e Entry) equivalent() string {
	switch {
	case e.Status == Supported:
		return e.Notes
	case e.Notes == "":
		return e.status()
	}
	return e.status() + ": " + e.Notes
}
