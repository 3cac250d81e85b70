package route

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// checkGRPC asks a gRPC authorizer (envoy.service.auth.v3.Authorization/
// Check), one unary call to the authorizer's cluster.
func (f *extAuthzFilter) checkGRPC(ctx context.Context, x *exchange, body []byte) (authzDecision, error) {
	out := &authv3.CheckResponse{}
	if err := grpcUnary(ctx, f.up, f.cluster, f.authority, grpcCheckPath, "authorizer", f.checkRequest(x, body), out); err != nil {
		return authzDecision{}, err
	}
	return grpcDecision(out), nil
}

// checkRequest describes the request as Envoy's CheckRequest does: the
// peers, and the HTTP request with lower-case header names (pseudo-headers
// included, repeated values joined with ",").
func (f *extAuthzFilter) checkRequest(x *exchange, body []byte) *authv3.CheckRequest {
	headers := map[string]string{":authority": x.r.Host, ":method": x.r.Method, ":path": x.v.path, ":scheme": x.v.scheme}
	for k, v := range f.checkRequestHeaders(x) {
		headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	hr := &authv3.AttributeContext_HttpRequest{
		Id: x.r.Header.Get("X-Request-Id"), Method: x.r.Method, Headers: headers,
		Path: x.v.path, Host: x.r.Host, Scheme: x.v.scheme, Query: x.v.query,
		Size: x.r.ContentLength, Protocol: x.r.Proto,
	}
	if body != nil {
		hr.Body = string(body)
	}
	attrs := &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Time: timestamppb.Now(), Http: hr}}
	if p, ok := x.getPeer(); ok {
		attrs.Source = &authv3.AttributeContext_Peer{Address: socketAddr(p.Addr.String(), 0)}
		if !p.ID.IsZero() {
			attrs.Source.Principal = p.ID.String()
		}
		if p.Dest.IsValid() {
			attrs.Destination = &authv3.AttributeContext_Peer{Address: socketAddr(p.Dest.Addr().String(), uint32(p.Dest.Port()))}
		}
	}
	return &authv3.CheckRequest{Attributes: attrs}
}

func socketAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// grpcDecision turns a CheckResponse into a decision. In ok_response, a
// header's append defaults to false (overwrite), as Envoy documents for
// this message.
func grpcDecision(r *authv3.CheckResponse) authzDecision {
	if r.GetStatus().GetCode() != int32(code.Code_OK) {
		d := authzDecision{status: int(r.GetDeniedResponse().GetStatus().GetCode()), headers: http.Header{}, body: r.GetDeniedResponse().GetBody()}
		if d.status < 200 || d.status > 599 { // unset or not an HTTP status a reply can carry
			d.status = http.StatusForbidden
		}
		for _, h := range r.GetDeniedResponse().GetHeaders() {
			d.headers.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		return d
	}
	ok := r.GetOkResponse()
	d := authzDecision{allowed: true, set: http.Header{}, add: http.Header{}, remove: ok.GetHeadersToRemove()}
	for _, h := range ok.GetHeaders() {
		k, v := http.CanonicalHeaderKey(h.GetHeader().GetKey()), h.GetHeader().GetValue()
		if appendHeader(h) {
			d.add[k] = append(d.add[k], v)
		} else {
			d.set[k] = []string{v}
		}
	}
	if hs := ok.GetResponseHeadersToAdd(); len(hs) > 0 {
		d.clientResponse = http.Header{}
		for _, h := range hs {
			d.clientResponse.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
	}
	return d
}

// appendHeader is whether an ok_response header is appended rather than
// set: the deprecated append flag when present, else an explicit
// append_action other than the (ext_authz-overridden) default.
func appendHeader(h *corev3.HeaderValueOption) bool {
	//lint:ignore SA1019 authorizers still send the deprecated flag; Envoy honours it first
	if a := h.GetAppend(); a != nil {
		return a.GetValue()
	}
	return false
}

var _ = strconv.Itoa
