package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"github.com/weft-mesh/weft/node-agent/cni"
)

// netConf is weft-cni's entry in the conflist (plus what the runtime adds:
// cniVersion, name, prevResult).
type netConf struct {
	types.PluginConf
	AgentSocket string `json:"agentSocket,omitempty"`
	SpoolDir    string `json:"spoolDir,omitempty"`
	// EnrolledNamespaces is the agent's enrolled-namespaces file (see
	// cni.DefaultEnrolledNamespaces); empty: cni's default.
	EnrolledNamespaces string `json:"enrolledNamespaces,omitempty"`
	// LogLevel: debug, info, warn (default), error or none; logs go to
	// stderr, which the runtime collects.
	LogLevel string `json:"logLevel,omitempty"`
}

type plugin struct {
	stdout io.Writer
	stderr io.Writer
	// timeout overrides cni.DefaultNotifyTimeout (tests).
	timeout time.Duration
	// fallback is cmdDel's configuration when the given one does not
	// parse; nil: cni's default paths (tests point it elsewhere).
	fallback *netConf
	// cniVersion of the request being served, for error output.
	cniVersion string
}

func parseConf(data []byte) (*netConf, error) {
	conf := &netConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "weft-cni: failed to parse network configuration", err.Error())
	}
	if conf.AgentSocket == "" {
		conf.AgentSocket = cni.DefaultAgentSocket
	}
	if conf.SpoolDir == "" {
		conf.SpoolDir = cni.DefaultSpoolDir
	}
	return conf, nil
}

func (p *plugin) logger(level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "info":
		l = slog.LevelInfo
	case "", "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	case "none", "off":
		return slog.New(slog.DiscardHandler)
	default:
		l = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(p.stderr, &slog.HandlerOptions{Level: l})).With("plugin", cni.PluginType)
}

func (p *plugin) notifyConfig(conf *netConf) cni.NotifyConfig {
	return cni.NotifyConfig{AgentSocket: conf.AgentSocket, SpoolDir: conf.SpoolDir, EnrolledNamespaces: conf.EnrolledNamespaces, Timeout: p.timeout}
}

// k8sArgs extracts the pod identity from CNI_ARGS
// ("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=n;K8S_POD_UID=u;..."); unknown keys
// are ignored.
func k8sArgs(args string) (ns, name, uid string) {
	for _, kv := range strings.Split(args, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "K8S_POD_NAMESPACE":
			ns = v
		case "K8S_POD_NAME":
			name = v
		case "K8S_POD_UID":
			uid = v
		}
	}
	return ns, name, uid
}

func baseEvent(op cni.Op, args *skel.CmdArgs) cni.Event {
	ns, name, uid := k8sArgs(args.Args)
	return cni.Event{
		Op:           op,
		PodNamespace: ns,
		PodName:      name,
		PodUID:       uid,
		Netns:        args.Netns,
		ContainerID:  args.ContainerID,
		Time:         time.Now().UTC(),
	}
}

// fromResult fills the pod's IPs and host-side interface from prevResult.
func fromResult(ev *cni.Event, res *types100.Result, log *slog.Logger) {
	ifs := res.Interfaces
	for _, ipc := range res.IPs {
		if ipc == nil {
			continue
		}
		if ipc.Interface != nil && *ipc.Interface >= 0 && *ipc.Interface < len(ifs) && ifs[*ipc.Interface] != nil && ifs[*ipc.Interface].Sandbox == "" {
			continue // an address on the host side, not the pod's
		}
		ev.IPs = append(ev.IPs, ipc.Address.IP.String())
	}
	ev.HostInterface, ev.HostIfindex = hostInterface(ifs, log)
}

// hostInterface picks the pod's host-side interface: among prevResult's
// interfaces with no sandbox, resolved in the current (node) netns, a veth
// is preferred and a bridge (the bridge plugin lists cni0 itself first) is
// never chosen; otherwise the last host-side one. An interface that cannot
// be resolved is still returned by name, with ifindex 0.
func hostInterface(ifs []*types100.Interface, log *slog.Logger) (string, int) {
	var fallback string
	var best string
	bestIdx := 0
	for _, itf := range ifs {
		if itf == nil || itf.Sandbox != "" || itf.Name == "" {
			continue
		}
		link, err := netlink.LinkByName(itf.Name)
		if err != nil {
			log.Warn("host interface from prevResult not found in this netns", "interface", itf.Name, "err", err)
			if fallback == "" {
				fallback = itf.Name
			}
			continue
		}
		switch link.Type() {
		case "bridge":
			continue
		case "veth":
			return itf.Name, link.Attrs().Index
		}
		best, bestIdx = itf.Name, link.Attrs().Index
	}
	if best != "" {
		return best, bestIdx
	}
	return fallback, 0
}

func (p *plugin) cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	p.cniVersion = conf.CNIVersion
	log := p.logger(conf.LogLevel)
	if conf.RawPrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig,
			"weft-cni is a chained plugin: ADD needs a prevResult",
			"no prevResult in the configuration: put weft-cni after the main plugin (ptp, bridge, ...) in a .conflist's \"plugins\" list, not as a standalone network")
	}
	var raw struct {
		PrevResult json.RawMessage `json:"prevResult"`
		Version    struct {
			CNIVersion string `json:"cniVersion"`
		} `json:"-"`
	}
	_ = json.Unmarshal(args.StdinData, &raw)
	_ = json.Unmarshal(raw.PrevResult, &raw.Version)
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "weft-cni: failed to parse prevResult", err.Error())
	}
	res, err := types100.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "weft-cni: failed to convert prevResult", err.Error())
	}

	ev := baseEvent(cni.OpAdd, args)
	fromResult(&ev, res, log)
	if err := p.notify(conf, ev, log); err != nil {
		// A pod of an enrolled namespace that is not captured must not
		// start; the kubelet retries the sandbox.
		return types.NewError(types.ErrTryAgainLater, "weft-cni: pod not captured by the mesh", err.Error())
	}

	// Pass the previous result through unchanged: as it came when it is
	// already in the request's version (keeping fields this library does
	// not know), else converted to that version.
	if len(raw.PrevResult) > 0 && raw.Version.CNIVersion == conf.CNIVersion {
		_, err := p.stdout.Write(raw.PrevResult)
		return err
	}
	out, err := conf.PrevResult.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "weft-cni: cannot pass prevResult through", err.Error())
	}
	return out.PrintTo(p.stdout)
}

// notify delivers ev or spools it. Its error, which fails the CNI call, is
// only ever an ADD that must not go on (cni.ErrNotCaptured).
func (p *plugin) notify(conf *netConf, ev cni.Event, log *slog.Logger) error {
	ctx := context.Background()
	r, err := cni.Notify(ctx, p.notifyConfig(conf), ev)
	switch {
	case errors.Is(err, cni.ErrNotCaptured):
		log.Error("pod of an enrolled namespace not captured: ADD fails, the kubelet retries", "event", ev.String(), "err", err)
		return err
	case err != nil:
		log.Error("event neither delivered to the agent nor spooled; the agent must reconcile this pod itself", "event", ev.String(), "err", err)
	case r.Delivered:
		log.Debug("event delivered", "event", ev.String())
	default:
		log.Warn("agent unreachable, event spooled", "event", ev.String(), "spool", r.SpoolPath, "agentErr", r.AgentErr)
	}
	return nil
}

// cmdDel tells the agent the sandbox is gone. It never fails (a DEL that
// errors blocks sandbox removal) and is idempotent: repeated DELs, or a DEL
// without prevResult or netns, just send (or spool) another DEL.
func (p *plugin) cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		conf = &netConf{AgentSocket: cni.DefaultAgentSocket, SpoolDir: cni.DefaultSpoolDir}
		if p.fallback != nil {
			conf = p.fallback
		}
	}
	log := p.logger(conf.LogLevel)
	if err != nil {
		log.Warn("DEL with unparsable config; using defaults", "err", err)
	}
	ev := baseEvent(cni.OpDel, args)
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err == nil {
			if res, err := types100.NewResultFromResult(conf.PrevResult); err == nil {
				fromResult(&ev, res, log)
			}
		}
	}
	if ev.ContainerID == "" {
		log.Warn("DEL without a container ID: nothing to tell the agent")
		return nil
	}
	_ = p.notify(conf, ev, log) // a DEL never fails (ErrNotCaptured is for ADDs only)
	return nil
}

// cmdCheck has nothing to verify: enrolment is the agent's state, which it
// reconciles itself.
func (p *plugin) cmdCheck(*skel.CmdArgs) error { return nil }

// cmdStatus: weft-cni is always ready; without the agent, events are
// spooled (and ADDs of enrolled namespaces fail, see notify).
func (p *plugin) cmdStatus(*skel.CmdArgs) error { return nil }
