package kubelet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	backoffInitial = 10 * time.Second
	backoffMax     = 5 * time.Minute
	// A container that ran this long without crashing has its back-off reset.
	backoffReset = 10 * time.Minute
)

// podState is the kubelet's in-memory view of one pod (by UID).
type podState struct {
	mu sync.Mutex

	uid       types.UID
	namespace string
	name      string
	dir       string
	pod       *v1.Pod

	sandbox        *sandboxState
	sandboxErr     string
	sandboxBackoff time.Duration
	sandboxRetryAt time.Time
	volumeErr      string
	volumeErrAt    time.Time
	vols           map[string]podVolume
	startTime      *metav1.Time

	containers map[string]*ctrState

	terminating bool
	// terminal: the pod reached Succeeded/Failed; nothing is restarted.
	terminal   bool
	lastPosted *v1.PodStatus
}

// ctrState tracks one container across its instances.
type ctrState struct {
	name   string
	isInit bool

	cur          *Container // running instance
	curID        string
	cancelProbes context.CancelFunc
	started      bool
	ready        bool

	restartCount int
	everStarted  bool
	last         *ExitStatus // most recent termination
	lastID       string
	prev         *ExitStatus // the one before (LastTerminationState when not restarting)
	prevID       string

	waitingReason  string
	waitingMessage string
	backoff        time.Duration
	retryAt        time.Time
	// backoffEventFor dedupes BackOff events per back-off period.
	backoffEventFor time.Time
	image, imageID  string
}

func podKey(ns, name string) string { return ns + "/" + name }

func (ps *podState) key() string { return podKey(ps.namespace, ps.name) }

func (ps *podState) ctr(name string, isInit bool) *ctrState {
	cs, ok := ps.containers[name]
	if !ok {
		cs = &ctrState{name: name, isInit: isInit}
		ps.containers[name] = cs
	}
	return cs
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (k *Kubelet) podDir(ns, name string, uid types.UID) string {
	return filepath.Join(k.cfg.StateDir, "pods", fmt.Sprintf("%s_%s_%s", ns, name, uid))
}

func (k *Kubelet) lookupPod(uid types.UID) *podState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pods[uid]
}

// findPod finds the running pod state by namespace/name (server, logs).
func (k *Kubelet) findPod(ns, name string, uid types.UID) *podState {
	k.mu.Lock()
	defer k.mu.Unlock()
	var best *podState
	for _, ps := range k.pods {
		if ps.namespace == ns && ps.name == name && (uid == "" || ps.uid == uid) {
			if best == nil || !ps.terminating {
				best = ps
			}
		}
	}
	return best
}

// syncKey is the level-triggered reconcile of one namespace/name.
func (k *Kubelet) syncKey(ctx context.Context, key string) (time.Duration, error) {
	ns, name, _ := strings.Cut(key, "/")
	pod, err := k.podLister.Pods(ns).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, err
	}
	if pod != nil && pod.Spec.NodeName != k.cfg.NodeName {
		pod = nil
	}
	// Runtime pods under this name that are not the API's pod go away.
	k.mu.Lock()
	var stale []*podState
	for _, ps := range k.pods {
		if ps.namespace == ns && ps.name == name && (pod == nil || ps.uid != pod.UID) {
			stale = append(stale, ps)
		}
	}
	k.mu.Unlock()
	for _, ps := range stale {
		k.startTermination(ps, 2*time.Second, false)
	}
	if pod == nil {
		return 0, nil
	}
	k.mu.Lock()
	ps, ok := k.pods[pod.UID]
	if !ok {
		ps = &podState{
			uid: pod.UID, namespace: pod.Namespace, name: pod.Name,
			dir:        k.podDir(pod.Namespace, pod.Name, pod.UID),
			containers: map[string]*ctrState{},
		}
		k.pods[pod.UID] = ps
	}
	k.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		grace := 30 * time.Second
		if pod.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		} else if pod.Spec.TerminationGracePeriodSeconds != nil {
			grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
		}
		ps.mu.Lock()
		ps.pod = pod
		ps.mu.Unlock()
		k.startTermination(ps, grace, true)
		return 0, nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.terminating {
		return 0, nil
	}
	ps.pod = pod
	return k.syncPod(ctx, ps, pod)
}

// syncPod drives a live pod toward its spec. Called with ps.mu held.
func (k *Kubelet) syncPod(ctx context.Context, ps *podState, pod *v1.Pod) (time.Duration, error) {
	if ps.startTime == nil {
		if pod.Status.StartTime != nil {
			ps.startTime = pod.Status.StartTime
		} else {
			t := metav1.Now()
			ps.startTime = &t
		}
	}
	k.collectExits(ps)
	if ps.terminal {
		return 0, k.postStatus(ctx, ps, pod)
	}
	if err := os.MkdirAll(ps.dir, 0o755); err != nil {
		return 0, err
	}
	var requeue time.Duration
	addRequeue := func(d time.Duration) {
		if d > 0 && (requeue == 0 || d < requeue) {
			requeue = d
		}
	}

	if ps.sandbox == nil {
		if wait := time.Until(ps.sandboxRetryAt); wait > 0 {
			addRequeue(wait)
			return requeue, k.postStatus(ctx, ps, pod)
		}
		if err := k.createSandbox(ctx, ps, pod); err != nil {
			ps.sandboxErr = err.Error()
			ps.sandboxBackoff = nextBackoff(ps.sandboxBackoff)
			ps.sandboxRetryAt = time.Now().Add(ps.sandboxBackoff)
			k.recorder.Eventf(pod, v1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
			k.log.Warn("creating pod sandbox", "pod", ps.key(), "err", err, "retryIn", ps.sandboxBackoff)
			addRequeue(ps.sandboxBackoff)
			return requeue, k.postStatus(ctx, ps, pod)
		}
		ps.sandboxErr, ps.sandboxBackoff = "", 0
	}
	info := k.runtimeInfo(ps)
	vols, err := k.setupVolumes(ctx, pod, ps.dir, info)
	if err != nil {
		if ps.volumeErr != err.Error() || time.Since(ps.volumeErrAt) > time.Minute {
			k.recorder.Eventf(pod, v1.EventTypeWarning, "FailedMount", "MountVolume.SetUp failed: %v", err)
			ps.volumeErrAt = time.Now()
		}
		ps.volumeErr = err.Error()
		for _, c := range allContainers(pod) {
			cs := ps.ctr(c.Name, false)
			if cs.cur == nil && !cs.everStarted {
				cs.waitingReason, cs.waitingMessage = "ContainerCreating", err.Error()
			}
		}
		addRequeue(10 * time.Second)
		return requeue, k.postStatus(ctx, ps, pod)
	}
	ps.volumeErr = ""
	ps.vols = vols

	// Init containers, in order; sidecars (restartPolicy Always) keep
	// running and only need to have started.
	initsDone := true
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := ps.ctr(c.Name, true)
		if isSidecar(c) {
			addRequeue(k.ensureContainer(ctx, ps, pod, c, cs, true))
			if !cs.started {
				initsDone = false
				break
			}
			continue
		}
		if cs.cur == nil && cs.last != nil && cs.last.ExitCode == 0 && cs.last.StartError == "" {
			continue
		}
		initsDone = false
		if cs.cur == nil {
			if cs.last != nil && pod.Spec.RestartPolicy == v1.RestartPolicyNever {
				break // the pod failed
			}
			addRequeue(k.ensureContainer(ctx, ps, pod, c, cs, true))
		}
		break
	}
	if initsDone {
		for i := range pod.Spec.Containers {
			c := &pod.Spec.Containers[i]
			cs := ps.ctr(c.Name, false)
			addRequeue(k.ensureContainer(ctx, ps, pod, c, cs, k.shouldRestart(pod, cs)))
		}
	} else {
		for i := range pod.Spec.Containers {
			cs := ps.ctr(pod.Spec.Containers[i].Name, false)
			if cs.cur == nil && !cs.everStarted {
				cs.waitingReason, cs.waitingMessage = "PodInitializing", ""
			}
		}
	}
	if err := k.postStatus(ctx, ps, pod); err != nil {
		return requeue, err
	}
	if ps.terminal {
		k.finishPod(ctx, ps)
	}
	return requeue, nil
}

func allContainers(pod *v1.Pod) []v1.Container {
	return append(append([]v1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...)
}

func (k *Kubelet) shouldRestart(pod *v1.Pod, cs *ctrState) bool {
	if cs.last == nil {
		return true
	}
	switch pod.Spec.RestartPolicy {
	case v1.RestartPolicyNever:
		return false
	case v1.RestartPolicyOnFailure:
		return cs.last.ExitCode != 0 || cs.last.StartError != ""
	}
	return true
}

func nextBackoff(b time.Duration) time.Duration {
	if b == 0 {
		return backoffInitial
	}
	if b*2 > backoffMax {
		return backoffMax
	}
	return b * 2
}

// ensureContainer starts the container if it is not running and may
// (re)start now; it returns when to look again for a pending back-off.
func (k *Kubelet) ensureContainer(ctx context.Context, ps *podState, pod *v1.Pod, c *v1.Container, cs *ctrState, restart bool) time.Duration {
	if cs.cur != nil {
		return 0
	}
	if cs.everStarted && !restart {
		return 0
	}
	if wait := time.Until(cs.retryAt); wait > 0 {
		if !cs.backoffEventFor.Equal(cs.retryAt) {
			cs.backoffEventFor = cs.retryAt
			if cs.waitingReason == "ErrImagePull" || cs.waitingReason == "ImagePullBackOff" {
				k.recorder.Eventf(pod, v1.EventTypeNormal, "BackOff", "Back-off pulling image %q", c.Image)
			} else {
				k.recorder.Eventf(pod, v1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)", c.Name, pod.Name, pod.Namespace, pod.UID)
			}
		}
		return wait
	}
	err := k.startContainer(ctx, ps, pod, c, cs)
	if err == nil {
		return 0
	}
	return time.Until(cs.retryAt)
}

// collectExits moves finished instances into last/prev and arms back-off.
func (k *Kubelet) collectExits(ps *podState) {
	for _, cs := range ps.containers {
		if cs.cur == nil {
			continue
		}
		select {
		case <-cs.cur.Done:
		default:
			continue
		}
		es := ReadExit(&cs.cur.State)
		k.rt.killLeftovers(&cs.cur.State)
		k.recordExit(ps, cs, &es)
	}
}

func (k *Kubelet) recordExit(ps *podState, cs *ctrState, es *ExitStatus) {
	if cs.cancelProbes != nil {
		cs.cancelProbes()
		cs.cancelProbes = nil
	}
	ranFor := es.FinishedAt.Sub(es.StartedAt)
	if ranFor > backoffReset {
		cs.backoff = 0
	}
	cs.prev, cs.prevID = cs.last, cs.lastID
	cs.last, cs.lastID = es, cs.curID
	cs.cur, cs.curID = nil, ""
	cs.started, cs.ready = false, false
	// The first restart is immediate, then 10s doubling (CrashLoopBackOff).
	if cs.backoff > 0 {
		cs.retryAt = es.FinishedAt.Add(cs.backoff)
	}
	cs.backoff = nextBackoff(cs.backoff)
	if cs.cur == nil && cs.last != nil {
		k.saveLastTermination(ps, cs)
	}
}

// saveLastTermination keeps restartCount/last exit on disk for adoption.
func (k *Kubelet) saveLastTermination(ps *podState, cs *ctrState) {
	st, err := LoadState(filepath.Join(ps.dir, cs.name))
	if err != nil {
		return
	}
	st.LastTermination = cs.last
	_ = k.rt.SaveState(st)
}

// startContainer resolves image/env/mounts and starts one instance.
func (k *Kubelet) startContainer(ctx context.Context, ps *podState, pod *v1.Pod, c *v1.Container, cs *ctrState) error {
	fail := func(reason string, err error, backoffReason string) error {
		cs.waitingReason, cs.waitingMessage = reason, err.Error()
		if backoffReason != "" && cs.retryAt.After(time.Time{}) {
			cs.waitingReason = backoffReason
		}
		cs.backoff = nextBackoff(cs.backoff)
		cs.retryAt = time.Now().Add(cs.backoff)
		k.recorder.Eventf(pod, v1.EventTypeWarning, "Failed", "Error: %v", err)
		k.log.Warn("cannot start container", "pod", ps.key(), "container", c.Name, "reason", reason, "err", err)
		return err
	}
	info := k.runtimeInfo(ps)
	var master *v1.Service
	var services []*v1.Service
	if k.svcLister != nil {
		master, _ = k.svcLister.Services(metav1.NamespaceDefault).Get("kubernetes")
		services, _ = k.svcLister.Services(pod.Namespace).List(everything())
	}
	env, mapping, err := buildEnv(pod, c, nil, services, master, info, k)
	if err != nil {
		return fail("CreateContainerConfigError", err, "")
	}
	command := make([]string, len(c.Command))
	for i, s := range c.Command {
		command[i] = expandVars(s, mapping)
	}
	args := make([]string, len(c.Args))
	for i, s := range c.Args {
		args[i] = expandVars(s, mapping)
	}
	img, err := k.images.Resolve(c.Image, command, args)
	if err != nil {
		var nf *ImageNotFoundError
		if errors.As(err, &nf) {
			return fail("ErrImagePull", err, "ImagePullBackOff")
		}
		return fail("ErrImagePull", err, "")
	}
	// Image env goes underneath the container env.
	if len(img.Env) > 0 {
		env, _, err = buildEnv(pod, c, img.Env, services, master, info, k)
		if err != nil {
			return fail("CreateContainerConfigError", err, "")
		}
	}
	mounts, err := volumeMountsFor(c, ps.vols, mapping)
	if err != nil {
		return fail("CreateContainerConfigError", err, "")
	}
	for _, m := range mounts {
		if m.Propagation != "" && strings.HasPrefix(m.Source, k.cfg.RootDir+"/") {
			if err := ensureSharedMount(m.Source); err != nil {
				return fail("CreateContainerConfigError", err, "")
			}
		}
	}
	mounted := map[string]bool{}
	for _, m := range mounts {
		mounted[filepath.Clean(m.Destination)] = true
	}
	for _, f := range []string{"hosts", "hostname", "resolv.conf"} {
		if !mounted["/etc/"+f] {
			mounts = append(mounts, Mount{Source: filepath.Join(ps.dir, "etc", f), Destination: "/etc/" + f})
		}
	}
	for _, b := range img.Binaries {
		mounts = append(mounts, Mount{Source: b, Destination: b, ReadOnly: true})
	}
	for _, f := range img.Files {
		mounts = append(mounts, Mount{Source: f.Source, Destination: f.Path, ReadOnly: true})
	}
	restartCount := cs.restartCount
	if cs.everStarted {
		restartCount++
	}
	hostname, _ := podHostname(pod)
	if pod.Spec.HostNetwork {
		hostname = k.cfg.NodeName
	}
	id := newID()
	spec := &ContainerSpec{
		ID:         id,
		Name:       c.Name,
		Dir:        filepath.Join(ps.dir, c.Name),
		Argv:       img.Argv,
		Env:        env,
		WorkingDir: c.WorkingDir,
		Hostname:   hostname,
		Mounts:     mounts,
		LogPath:    filepath.Join(ps.dir, c.Name, fmt.Sprintf("%d.log", restartCount)),
	}
	if sc := c.SecurityContext; sc != nil {
		spec.Privileged = sc.Privileged != nil && *sc.Privileged
		if sc.Capabilities != nil {
			for _, cp := range sc.Capabilities.Add {
				spec.CapAdd = append(spec.CapAdd, string(cp))
			}
			for _, cp := range sc.Capabilities.Drop {
				spec.CapDrop = append(spec.CapDrop, string(cp))
			}
		}
	}
	st := ContainerState{
		RestartCount:    restartCount,
		Image:           c.Image,
		ImageID:         img.ImageID,
		LastTermination: cs.last,
		SpecHash:        containerHash(c),
	}
	if ps.sandbox != nil && len(ps.sandbox.PodIPs) > 0 {
		st.PodIP = ps.sandbox.PodIPs[0]
	}
	netns := ""
	if ps.sandbox != nil {
		netns = ps.sandbox.Netns
	}
	cs.image, cs.imageID = c.Image, img.ImageID
	ctr, err := k.rt.Start(spec, netns, string(pod.UID), st)
	cs.restartCount = restartCount
	cs.everStarted = true
	if err != nil {
		// Like a runtime's StartError: a terminated instance with 128.
		now := time.Now()
		cs.curID = id
		k.recordExit(ps, cs, &ExitStatus{ExitCode: 128, StartError: err.Error(), StartedAt: now, FinishedAt: now})
		if cs.retryAt.Before(now) {
			cs.retryAt = now.Add(cs.backoff)
		}
		k.recorder.Eventf(pod, v1.EventTypeWarning, "Failed", "Error: failed to start container %q: %v", c.Name, err)
		k.log.Warn("container start failed", "pod", ps.key(), "container", c.Name, "err", err)
		return err
	}
	cs.waitingReason, cs.waitingMessage = "", ""
	k.recorder.Eventf(pod, v1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
	k.recorder.Eventf(pod, v1.EventTypeNormal, "Created", "Created container: %s", c.Name)
	k.recorder.Eventf(pod, v1.EventTypeNormal, "Started", "Started container %s", c.Name)
	k.log.Info("container started", "pod", ps.key(), "container", c.Name, "pid", ctr.State.PID, "restartCount", restartCount)
	k.attach(ps, pod, c, cs, ctr)
	if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
		// Not under ps.mu: hooks look up the pod's IP.
		go func() {
			hctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := k.runHook(hctx, ps, pod, c.Lifecycle.PostStart, ctr); err != nil {
				k.recorder.Eventf(pod, v1.EventTypeWarning, "FailedPostStartHook", "PostStartHook failed: %v", err)
				k.log.Warn("postStart hook failed, killing container", "pod", ps.key(), "container", c.Name, "err", err)
				k.rt.Stop(ctr, time.Duration(defaultInt64(pod.Spec.TerminationGracePeriodSeconds, 30))*time.Second)
			}
		}()
	}
	return nil
}

// attach makes ctr the current instance: watch its exit and run probes.
func (k *Kubelet) attach(ps *podState, pod *v1.Pod, c *v1.Container, cs *ctrState, ctr *Container) {
	cs.cur, cs.curID = ctr, ctr.State.ID
	cs.restartCount = ctr.State.RestartCount
	cs.everStarted = true
	if ctr.State.Image != "" {
		cs.image, cs.imageID = ctr.State.Image, ctr.State.ImageID
	}
	if ctr.State.LastTermination != nil && cs.last == nil {
		cs.last = ctr.State.LastTermination
	}
	key := ps.key()
	go func() {
		<-ctr.Done
		k.enqueue(key)
	}()
	pctx, cancel := context.WithCancel(context.Background())
	cs.cancelProbes = cancel
	cs.started = c.StartupProbe == nil
	cs.ready = c.ReadinessProbe == nil && cs.started
	if cs.isInit && !isSidecar(c) {
		cs.ready = false
	}
	k.startProbes(pctx, ps, pod, c, cs, ctr)
}

func containerHash(c *v1.Container) string {
	data, _ := json.Marshal(c)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

func (k *Kubelet) runtimeInfo(ps *podState) podRuntimeInfo {
	info := podRuntimeInfo{HostIP: k.cfg.NodeIP, NodeCPU: k.nodeCPU, NodeMemory: k.nodeMemory}
	if ps.sandbox != nil {
		info.PodIPs = ps.sandbox.PodIPs
	}
	return info
}

// createSandbox creates the netns, runs CNI ADD and writes /etc files.
func (k *Kubelet) createSandbox(ctx context.Context, ps *podState, pod *v1.Pod) error {
	sb := &sandboxState{ID: newID(), UID: string(pod.UID), Namespace: pod.Namespace, Name: pod.Name, HostNetwork: pod.Spec.HostNetwork}
	if pod.Spec.HostNetwork {
		sb.PodIPs = []string{k.cfg.NodeIP}
	} else {
		sysctls := map[string]string{}
		if sc := pod.Spec.SecurityContext; sc != nil {
			for _, s := range sc.Sysctls {
				sysctls[s.Name] = s.Value
			}
		}
		netns, err := createNetns(k.cfg.NetnsDir, k.cfg.NetnsPrefix+sb.ID[:12], sysctls)
		if err != nil {
			return err
		}
		sb.Netns = netns
		// Persist before CNI so a crash in between is cleaned up.
		if err := saveSandbox(ps.dir, sb); err != nil {
			_ = deleteNetns(netns)
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		ips, err := k.cniAdd(cctx, sb, pod)
		cancel()
		if err != nil {
			dctx, dcancel := context.WithTimeout(context.Background(), time.Minute)
			_ = k.cniDel(dctx, sb)
			dcancel()
			_ = deleteNetns(netns)
			_ = os.Remove(filepath.Join(ps.dir, "sandbox.json"))
			return err
		}
		sb.PodIPs = ips
	}
	if err := saveSandbox(ps.dir, sb); err != nil {
		return err
	}
	if err := k.writeEtcFiles(ps, pod, sb); err != nil {
		return err
	}
	ps.sandbox = sb
	k.log.Info("pod sandbox ready", "pod", ps.key(), "netns", sb.Netns, "ips", sb.PodIPs)
	return nil
}

func (k *Kubelet) writeEtcFiles(ps *podState, pod *v1.Pod, sb *sandboxState) error {
	etc := filepath.Join(ps.dir, "etc")
	nodeResolv, _ := os.ReadFile(filepath.Join(k.cfg.RootDir, "etc/resolv.conf"))
	hostname, _ := podHostname(pod)
	if pod.Spec.HostNetwork {
		hostname = k.cfg.NodeName
	}
	files := map[string][]byte{
		"hosts":       renderHosts(pod, sb.PodIPs, k.cfg.NodeName, k.cfg.NodeIP, k.cfg.ClusterDomain),
		"hostname":    []byte(hostname + "\n"),
		"resolv.conf": renderResolvConf(pod, k.cfg.ClusterDNS, k.cfg.ClusterDomain, nodeResolv),
	}
	for name, data := range files {
		// Written in place: they are bind-mounted files, a rename would
		// detach running containers from updates.
		if err := os.MkdirAll(etc, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(etc, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startTermination kills a pod asynchronously (once) and then removes it.
func (k *Kubelet) startTermination(ps *podState, grace time.Duration, deleteFromAPI bool) {
	ps.mu.Lock()
	if ps.terminating {
		ps.mu.Unlock()
		return
	}
	ps.terminating = true
	ps.mu.Unlock()
	go k.terminate(ps, grace, deleteFromAPI)
}

func (k *Kubelet) terminate(ps *podState, grace time.Duration, deleteFromAPI bool) {
	ctx, cancel := context.WithTimeout(context.Background(), grace+2*time.Minute)
	defer cancel()
	ps.mu.Lock()
	pod := ps.pod
	k.collectExits(ps)
	var running []*ctrState
	for _, cs := range ps.containers {
		if cs.cur != nil {
			running = append(running, cs)
		}
	}
	ps.mu.Unlock()
	k.log.Info("stopping pod", "pod", ps.key(), "uid", ps.uid, "grace", grace)
	deadline := time.Now().Add(grace)
	var wg sync.WaitGroup
	for _, cs := range running {
		wg.Add(1)
		go func(cs *ctrState) {
			defer wg.Done()
			var c *v1.Container
			if pod != nil {
				c = findContainer(pod, cs.name)
				k.recorder.Eventf(pod, v1.EventTypeNormal, "Killing", "Stopping container %s", cs.name)
			}
			if c != nil && c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
				hctx, hcancel := context.WithDeadline(ctx, deadline)
				if err := k.runHook(hctx, ps, pod, c.Lifecycle.PreStop, cs.cur); err != nil {
					k.log.Warn("preStop hook failed", "pod", ps.key(), "container", cs.name, "err", err)
					k.recorder.Eventf(pod, v1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed: %v", err)
				}
				hcancel()
			}
			remaining := time.Until(deadline)
			if remaining < 0 {
				remaining = 0
			}
			if cs.cancelProbes != nil {
				cs.cancelProbes()
			}
			k.rt.Stop(cs.cur, remaining)
		}(cs)
	}
	wg.Wait()
	k.teardownPod(ctx, ps)
	if deleteFromAPI && pod != nil {
		uid := ps.uid
		err := k.client.CoreV1().Pods(ps.namespace).Delete(ctx, ps.name, metav1.DeleteOptions{
			GracePeriodSeconds: ptrTo[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &uid},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			k.log.Warn("deleting pod", "pod", ps.key(), "err", err)
		}
	}
	k.mu.Lock()
	delete(k.pods, ps.uid)
	k.mu.Unlock()
	k.tokens.forget(string(ps.uid))
	k.log.Info("pod removed", "pod", ps.key(), "uid", ps.uid)
	k.enqueue(ps.key())
}

func ptrTo[T any](v T) *T { return &v }

// teardownNetwork releases the pod's IP and netns.
func (k *Kubelet) teardownNetwork(ctx context.Context, dir string, sb *sandboxState) {
	if sb == nil || sb.HostNetwork || sb.Netns == "" {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := k.cniDel(dctx, sb); err != nil {
		k.log.Warn("CNI DEL failed", "pod", sb.Namespace+"/"+sb.Name, "err", err)
	}
	if err := deleteNetns(sb.Netns); err != nil {
		k.log.Warn("deleting netns", "netns", sb.Netns, "err", err)
	}
	sb.Netns = ""
	_ = saveSandbox(dir, sb)
}

// teardownPod removes everything the pod had on the node (containers must
// be stopped).
func (k *Kubelet) teardownPod(ctx context.Context, ps *podState) {
	ps.mu.Lock()
	sb := ps.sandbox
	ps.mu.Unlock()
	if sb == nil {
		sb, _ = loadSandbox(ps.dir)
	}
	k.teardownNetwork(ctx, ps.dir, sb)
	k.rt.RemovePodCgroups(string(ps.uid))
	teardownVolumes(ps.dir)
	k.keepLogs(ps.dir)
	if err := os.RemoveAll(ps.dir); err != nil {
		k.log.Warn("removing pod dir", "dir", ps.dir, "err", err)
	}
}

// keepLogs moves the container logs of a pod being removed to
// <state>/deleted-pods/<pod dir>/, where the end-to-end tests' failure
// report reads them: a test that fails after a pod is gone (a rollout, an
// uninstall) needs what that pod logged.
func (k *Kubelet) keepLogs(podDir string) {
	logs, _ := filepath.Glob(filepath.Join(podDir, "*", "*.log"))
	for _, l := range logs {
		rel, err := filepath.Rel(podDir, l)
		dst := filepath.Join(k.cfg.StateDir, "deleted-pods", filepath.Base(podDir), rel)
		if err == nil {
			err = os.MkdirAll(filepath.Dir(dst), 0o755)
		}
		if err == nil {
			err = os.Rename(l, dst)
		}
		if err != nil {
			k.log.Warn("keeping a deleted pod's log", "log", l, "err", err)
		}
	}
}

// finishPod releases the network of a pod that reached Succeeded/Failed;
// its logs stay until the pod is deleted.
func (k *Kubelet) finishPod(ctx context.Context, ps *podState) {
	for _, cs := range ps.containers {
		if cs.cur != nil {
			if cs.cancelProbes != nil {
				cs.cancelProbes()
			}
			k.rt.Stop(cs.cur, 5*time.Second)
		}
	}
	k.collectExits(ps)
	k.teardownNetwork(ctx, ps.dir, ps.sandbox)
}

// postStatus computes the pod status and writes it if it changed.
func (k *Kubelet) postStatus(ctx context.Context, ps *podState, pod *v1.Pod) error {
	obs := k.observe(ps, pod)
	base := pod.DeepCopy()
	if ps.lastPosted != nil {
		// Our last write is fresher than the informer's copy.
		base.Status.Conditions = mergeConditions(pod.Status.Conditions, ps.lastPosted.Conditions)
	}
	status := computePodStatus(base, obs, time.Now())
	if status.Phase == v1.PodSucceeded || status.Phase == v1.PodFailed {
		ps.terminal = true
	}
	if ps.lastPosted != nil && statusEqual(ps.lastPosted, &status) && statusEqual(&pod.Status, &status) {
		return nil
	}
	if ps.lastPosted != nil && statusEqual(ps.lastPosted, &status) {
		// Already written; the informer just has not caught up.
		return nil
	}
	upd := pod.DeepCopy()
	upd.Status = status
	_, err := k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		fresh, gerr := k.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if gerr != nil {
			return gerr
		}
		if fresh.UID != pod.UID {
			return nil
		}
		fresh.Status = computePodStatus(mergeOwned(fresh, ps.lastPosted), obs, time.Now())
		_, err = k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, fresh, metav1.UpdateOptions{})
		status = fresh.Status
	}
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating pod status: %w", err)
	}
	ps.lastPosted = &status
	return nil
}

func mergeOwned(pod *v1.Pod, last *v1.PodStatus) *v1.Pod {
	if last == nil {
		return pod
	}
	p := pod.DeepCopy()
	p.Status.Conditions = mergeConditions(pod.Status.Conditions, last.Conditions)
	return p
}

// mergeConditions keeps others' conditions from api and ours from last.
func mergeConditions(api, last []v1.PodCondition) []v1.PodCondition {
	owned := map[v1.PodConditionType]bool{v1.PodReadyToStartContainers: true, v1.PodInitialized: true, v1.PodReady: true, v1.ContainersReady: true}
	var out []v1.PodCondition
	for _, c := range api {
		if !owned[c.Type] {
			out = append(out, c)
		}
	}
	for _, c := range last {
		if owned[c.Type] {
			out = append(out, c)
		}
	}
	return out
}

// observe turns the in-memory state into a podObservation.
func (k *Kubelet) observe(ps *podState, pod *v1.Pod) *podObservation {
	obs := &podObservation{HostIP: k.cfg.NodeIP, StartTime: ps.startTime}
	if ps.sandbox != nil {
		obs.SandboxReady = ps.sandbox.HostNetwork || ps.sandbox.Netns != ""
		// Kept after the netns is gone (terminal pods), like the kubelet.
		obs.PodIPs = ps.sandbox.PodIPs
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		obs.Init = append(obs.Init, k.containerStatus(ps, pod, c, true))
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		obs.Containers = append(obs.Containers, k.containerStatus(ps, pod, c, false))
	}
	return obs
}

func (k *Kubelet) containerStatus(ps *podState, pod *v1.Pod, c *v1.Container, isInit bool) v1.ContainerStatus {
	cs := ps.ctr(c.Name, isInit)
	st := v1.ContainerStatus{
		Name:         c.Name,
		Image:        c.Image,
		ImageID:      cs.imageID,
		RestartCount: int32(cs.restartCount),
		Ready:        cs.ready && cs.cur != nil,
		Started:      ptrTo(cs.started && cs.cur != nil),
	}
	if cs.image != "" {
		st.Image = cs.image
	}
	if st.ImageID == "" {
		st.ImageID = "weft://" + normalizeRepo(c.Image)
	}
	last := func() v1.ContainerState {
		if cs.last != nil {
			return v1.ContainerState{Terminated: terminatedFrom(cs.last, "weft://"+cs.lastID)}
		}
		return v1.ContainerState{}
	}
	switch {
	case cs.cur != nil:
		st.ContainerID = "weft://" + cs.curID
		st.State.Running = &v1.ContainerStateRunning{StartedAt: metav1.NewTime(cs.cur.State.StartedAt)}
		st.LastTerminationState = last()
	case cs.last != nil:
		st.ContainerID = "weft://" + cs.lastID
		restart := !ps.terminal && !ps.terminating && k.shouldRestart(pod, cs)
		if isSidecar(c) {
			restart = !ps.terminal && !ps.terminating
		} else if isInit {
			restart = !ps.terminal && (cs.last.ExitCode != 0 || cs.last.StartError != "") && pod.Spec.RestartPolicy != v1.RestartPolicyNever
		}
		if restart {
			st.LastTerminationState = last()
			reason := "CrashLoopBackOff"
			if cs.waitingReason != "" {
				reason = cs.waitingReason
			}
			msg := fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", cs.backoff/2, c.Name, pod.Name, pod.Namespace, pod.UID)
			if cs.waitingMessage != "" {
				msg = cs.waitingMessage
			}
			if time.Now().After(cs.retryAt) && cs.waitingReason == "" {
				reason, msg = "ContainerCreating", ""
			}
			st.State.Waiting = &v1.ContainerStateWaiting{Reason: reason, Message: msg}
		} else {
			st.State.Terminated = terminatedFrom(cs.last, "weft://"+cs.lastID)
			if cs.prev != nil {
				st.LastTerminationState = v1.ContainerState{Terminated: terminatedFrom(cs.prev, "weft://"+cs.prevID)}
			}
		}
	default:
		reason := cs.waitingReason
		if reason == "" {
			reason = "ContainerCreating"
		}
		st.State.Waiting = &v1.ContainerStateWaiting{Reason: reason, Message: cs.waitingMessage}
	}
	return st
}

// recoverPods runs once at start: adopt what belongs to pods that still
// exist, clean up what belongs to pods that vanished while we were down.
func (k *Kubelet) recoverPods(ctx context.Context) {
	entries, _ := os.ReadDir(filepath.Join(k.cfg.StateDir, "pods"))
	known := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(k.cfg.StateDir, "pods", e.Name())
		parts := strings.Split(e.Name(), "_")
		if len(parts) != 3 {
			continue
		}
		ns, name, uid := parts[0], parts[1], types.UID(parts[2])
		sb, _ := loadSandbox(dir)
		if sb != nil && sb.Netns != "" {
			known[filepath.Base(sb.Netns)] = true
		}
		ps := &podState{uid: uid, namespace: ns, name: name, dir: dir, containers: map[string]*ctrState{}, sandbox: sb}
		pod, err := k.podLister.Pods(ns).Get(name)
		if err != nil || pod.UID != uid || pod.Spec.NodeName != k.cfg.NodeName {
			k.log.Info("cleaning up pod that is gone from the API", "pod", ns+"/"+name, "uid", uid)
			k.adoptContainers(ps, nil)
			k.mu.Lock()
			k.pods[uid] = ps
			k.mu.Unlock()
			k.startTermination(ps, 2*time.Second, false)
			continue
		}
		// The sandbox must still be there to keep the containers.
		if sb != nil && !sb.HostNetwork && (sb.Netns == "" || !isMountPoint(sb.Netns)) {
			if pod.Status.Phase != v1.PodSucceeded && pod.Status.Phase != v1.PodFailed {
				k.log.Warn("pod netns is gone; restarting the pod's containers", "pod", ns+"/"+name)
			}
			ps.sandbox = nil
		}
		ps.pod = pod
		ps.startTime = pod.Status.StartTime
		k.adoptContainers(ps, pod)
		if ps.sandbox == nil {
			for _, cs := range ps.containers {
				if cs.cur != nil {
					k.rt.Stop(cs.cur, 2*time.Second)
				}
			}
			k.collectExits(ps)
			if sb != nil {
				k.teardownNetwork(ctx, dir, sb)
			}
		}
		if pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
			ps.terminal = true
		}
		k.mu.Lock()
		k.pods[uid] = ps
		k.mu.Unlock()
	}
	// Netns with our prefix that no pod owns (crash mid-creation).
	nsEntries, _ := os.ReadDir(k.cfg.NetnsDir)
	for _, e := range nsEntries {
		if strings.HasPrefix(e.Name(), k.cfg.NetnsPrefix) && !known[e.Name()] {
			k.log.Info("removing orphaned netns", "netns", e.Name())
			_ = deleteNetns(filepath.Join(k.cfg.NetnsDir, e.Name()))
		}
	}
	// Every pod in the API gets a sync.
	pods, _ := k.podLister.List(everything())
	for _, p := range pods {
		k.enqueue(podKey(p.Namespace, p.Name))
	}
}

// adoptContainers re-attaches to the containers of a pod from their state
// files; pod may be nil (pod is going away).
func (k *Kubelet) adoptContainers(ps *podState, pod *v1.Pod) {
	entries, _ := os.ReadDir(ps.dir)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		st, err := LoadState(filepath.Join(ps.dir, e.Name()))
		if err != nil {
			continue
		}
		var c *v1.Container
		isInit := false
		if pod != nil {
			c = findContainer(pod, st.Name)
			for i := range pod.Spec.InitContainers {
				if pod.Spec.InitContainers[i].Name == st.Name {
					isInit = true
				}
			}
		}
		cs := ps.ctr(st.Name, isInit)
		cs.restartCount, cs.everStarted = st.RestartCount, true
		cs.image, cs.imageID = st.Image, st.ImageID
		cs.last = st.LastTermination
		ctr, err := k.rt.Adopt(st)
		if err == nil && (!sameProcess(st.PID, st.PIDStart) || (c != nil && st.SpecHash != "" && st.SpecHash != containerHash(c))) {
			// The shim lives but its process does not check out.
			k.log.Warn("container state does not check out; restarting it", "pod", ps.key(), "container", st.Name)
			k.rt.Stop(ctr, 2*time.Second)
			<-ctr.Done
		}
		if err != nil || c == nil || pod == nil {
			if err == nil {
				// Pod going away: keep it to be stopped.
				cs.cur, cs.curID = ctr, st.ID
				continue
			}
			es := ReadExit(st)
			cs.curID = st.ID
			k.recordExit(ps, cs, &es)
			continue
		}
		select {
		case <-ctr.Done:
			es := ReadExit(st)
			cs.curID = st.ID
			k.recordExit(ps, cs, &es)
			continue
		default:
		}
		k.log.Info("adopted running container", "pod", ps.key(), "container", st.Name, "pid", st.PID)
		k.attach(ps, pod, c, cs, ctr)
		// Readiness is re-established by the probes.
	}
}
