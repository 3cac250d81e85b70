package charts

import "embed"

// FS holds the charts (base, control, node-agent) for weftctl install;
// `all:` keeps the _helpers.tpl files.
//
//go:embed all:base all:control all:node-agent
var FS embed.FS
