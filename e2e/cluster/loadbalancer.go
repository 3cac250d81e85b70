package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// loadBalancers plays the cloud provider for Services of type LoadBalancer,
// the way cloud-provider-kind does for kind: each gets a host loopback
// address (127.100+<index>.0.<n>, so clusters never collide), written to
// status.loadBalancer.ingress, and every service port on that address is
// forwarded to the Service's node port on the first node, dialed from the
// fabric like an external load balancer would. So the tutorials' commands
// work from the host unchanged:
//
//	INGRESS_HOST=$(kubectl get svc ... -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
//	curl http://$INGRESS_HOST:$INGRESS_PORT/productpage
type loadBalancers struct {
	client kubernetes.Interface
	index  int
	fabric string // netns path the forwarders dial from
	node   netip.Addr
	log    *slog.Logger

	mu    sync.Mutex
	addrs map[string]netip.Addr         // namespace/name -> address
	fwds  map[string]map[int]*forwarder // namespace/name -> port -> forwarder
	stop  context.CancelFunc
}

func (lb *loadBalancers) start() error {
	lb.addrs, lb.fwds = map[string]netip.Addr{}, map[string]map[int]*forwarder{}
	ctx, cancel := context.WithCancel(context.Background())
	lb.stop = cancel
	f := informers.NewSharedInformerFactory(lb.client, 0)
	inf := f.Core().V1().Services().Informer()
	handle := func(obj any) {
		if svc, ok := obj.(*corev1.Service); ok {
			lb.sync(ctx, svc)
		}
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if svc, ok := obj.(*corev1.Service); ok {
				lb.release(svc.Namespace + "/" + svc.Name)
			}
		},
	})
	if err != nil {
		cancel()
		return err
	}
	f.Start(ctx.Done())
	return nil
}

func (lb *loadBalancers) close() {
	if lb.stop == nil {
		return
	}
	lb.stop()
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for key := range lb.fwds {
		lb.releaseLocked(key)
	}
}

// sync makes the forwarders and status of svc match its spec.
func (lb *loadBalancers) sync(ctx context.Context, svc *corev1.Service) {
	key := svc.Namespace + "/" + svc.Name
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		lb.releaseLocked(key)
		return
	}
	addr, ok := lb.addrs[key]
	if !ok {
		addr = lb.allocateLocked()
		lb.addrs[key] = addr
	}
	want := map[int]int{}
	for _, p := range svc.Spec.Ports {
		if p.Protocol == corev1.ProtocolTCP && p.NodePort != 0 {
			want[int(p.Port)] = int(p.NodePort)
		}
	}
	if lb.fwds[key] == nil {
		lb.fwds[key] = map[int]*forwarder{}
	}
	for port, f := range lb.fwds[key] {
		if want[port] == 0 || f.target != lb.target(want[port]) {
			f.close()
			delete(lb.fwds[key], port)
		}
	}
	for port, nodePort := range want {
		if lb.fwds[key][port] != nil {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), fmt.Sprint(port)))
		if err != nil {
			lb.log.Warn("load balancer port not available on the host", "service", key, "address", addr, "port", port, "err", err)
			continue
		}
		f := &forwarder{ln: ln, netns: lb.fabric, target: lb.target(nodePort), log: lb.log}
		lb.fwds[key][port] = f
		go f.serve()
	}
	if ing := svc.Status.LoadBalancer.Ingress; len(ing) == 1 && ing[0].IP == addr.String() {
		return
	}
	upd := svc.DeepCopy()
	upd.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: addr.String()}}
	if _, err := lb.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
		lb.log.Warn("load balancer status", "service", key, "err", err) // the informer's next update retries
	}
}

func (lb *loadBalancers) target(nodePort int) string {
	return net.JoinHostPort(lb.node.String(), fmt.Sprint(nodePort))
}

// allocateLocked returns the lowest free address of this cluster's range.
func (lb *loadBalancers) allocateLocked() netip.Addr {
	used := map[netip.Addr]bool{}
	for _, a := range lb.addrs {
		used[a] = true
	}
	a := netip.AddrFrom4([4]byte{127, byte(100 + lb.index), 0, 1})
	for used[a] {
		a = a.Next()
	}
	return a
}

func (lb *loadBalancers) release(key string) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.releaseLocked(key)
}

func (lb *loadBalancers) releaseLocked(key string) {
	for _, f := range lb.fwds[key] {
		f.close()
	}
	delete(lb.fwds, key)
	delete(lb.addrs, key)
}
