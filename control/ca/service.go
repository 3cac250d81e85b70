package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	cav1 "github.com/weft-mesh/weft/api/ca/v1"
)

// Request results, the values of the weft_ca_requests_total "result" label.
const (
	ResultOK               = "ok"
	ResultUnauthenticated  = "unauthenticated"
	ResultPermissionDenied = "permission_denied"
	ResultInvalidArgument  = "invalid_argument"
	ResultUnavailable      = "unavailable"
	ResultInternal         = "internal"
)

// ServiceOptions configure the CertificateService. Zero is usable.
type ServiceOptions struct {
	// Registerer for the CA metrics. Nil means they are not registered.
	// Metrics already registered there (a second Service) are shared.
	Registerer prometheus.Registerer
	// Logger gets one line per request. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock used to measure durations. Default time.Now.
	Now func() time.Time
}

// Service implements cav1.CertificateServiceServer.
type Service struct {
	cav1.UnimplementedCertificateServiceServer

	authority *Authority
	authn     Authenticator
	authz     Authorizer
	logger    *slog.Logger
	now       func() time.Time

	issued   prometheus.Counter
	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

var _ cav1.CertificateServiceServer = (*Service)(nil)

// NewService returns the CertificateService: authenticate the bearer token,
// validate the CSR, authorize the identity it asks for, sign.
//
// It panics only if opts.Registerer refuses the metrics for a reason other
// than their being already registered (a programming error).
func NewService(authority *Authority, authn Authenticator, authz Authorizer, opts ServiceOptions) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Service{
		authority: authority,
		authn:     authn,
		authz:     authz,
		logger:    opts.Logger,
		now:       opts.Now,
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_ca_certificates_issued_total",
			Help: "Workload certificates issued by the Weft CA.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_ca_requests_total",
			Help: "CreateCertificate requests by result (ok, unauthenticated, permission_denied, invalid_argument, unavailable, internal).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_ca_request_duration_seconds",
			Help:    "Time to answer a CreateCertificate request, including token review.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
	}
	if opts.Registerer != nil {
		s.issued = register(opts.Registerer, s.issued)
		s.requests = register(opts.Registerer, s.requests)
		s.duration = register(opts.Registerer, s.duration)
	}
	for _, r := range []string{ResultOK, ResultUnauthenticated, ResultPermissionDenied, ResultInvalidArgument, ResultUnavailable, ResultInternal} {
		s.requests.WithLabelValues(r)
	}
	return s
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("registering CA metrics: " + err.Error())
	}
	return c
}

// requestLog accumulates the fields of the one log line per request.
type requestLog struct {
	caller    *Caller
	requested string
	ttl       time.Duration
	serial    string
	notAfter  time.Time
	// cause is the server-side detail of an Unavailable or Internal error,
	// logged but not returned to the caller.
	cause error
}

// CreateCertificate implements cav1.CertificateServiceServer.
func (s *Service) CreateCertificate(ctx context.Context, req *cav1.CreateCertificateRequest) (*cav1.CreateCertificateResponse, error) {
	start := s.now()
	var rl requestLog
	resp, result, err := s.createCertificate(ctx, req, &rl)
	elapsed := s.now().Sub(start)
	s.duration.Observe(elapsed.Seconds())
	s.requests.WithLabelValues(result).Inc()
	if result == ResultOK {
		s.issued.Inc()
	}
	s.log(ctx, &rl, result, elapsed, err)
	return resp, err
}

func (s *Service) createCertificate(ctx context.Context, req *cav1.CreateCertificateRequest, rl *requestLog) (*cav1.CreateCertificateResponse, string, error) {
	caller, err := AuthenticateContext(ctx, s.authn)
	if err != nil {
		if status.Code(err) == codes.Unauthenticated {
			return nil, ResultUnauthenticated, err
		}
		rl.cause = err
		return nil, ResultUnavailable, err
	}
	rl.caller = caller

	csr, requested, err := ParseCSR([]byte(req.GetCsr()))
	if err != nil {
		return nil, ResultInvalidArgument, status.Error(codes.InvalidArgument, err.Error())
	}
	rl.requested = requested.String()

	ttl, err := requestedTTL(req.GetValiditySeconds(), s.authority)
	if err != nil {
		return nil, ResultInvalidArgument, status.Error(codes.InvalidArgument, err.Error())
	}
	rl.ttl = ttl

	if err := s.authz.Authorize(ctx, caller, requested); err != nil {
		if errors.Is(err, ErrPermissionDenied) {
			return nil, ResultPermissionDenied, status.Error(codes.PermissionDenied, err.Error())
		}
		rl.cause = err
		return nil, ResultUnavailable, status.Error(codes.Unavailable, "cannot check the requested identity right now; retry")
	}

	leaf, err := s.authority.issue(csr, requested, ttl)
	if err != nil {
		if errors.Is(err, ErrInvalidCSR) || errors.Is(err, ErrInvalidTTL) {
			return nil, ResultInvalidArgument, status.Error(codes.InvalidArgument, err.Error())
		}
		// The detail goes to the log only; the caller learns nothing about
		// the CA's internals.
		rl.cause = err
		return nil, ResultInternal, status.Error(codes.Internal, "the CA could not sign the certificate")
	}
	rl.serial = leaf.SerialNumber.Text(16)
	rl.notAfter = leaf.NotAfter
	return &cav1.CreateCertificateResponse{
		CertChain:   EncodePEM(s.authority.chainDER(leaf)),
		TrustBundle: EncodePEM(rawCerts(s.authority.roots)),
	}, ResultOK, nil
}

// requestedTTL converts validity_seconds, capping before multiplying so that
// huge values cannot overflow.
func requestedTTL(seconds int64, a *Authority) (time.Duration, error) {
	if seconds < 0 {
		return 0, fmt.Errorf("%w: validity_seconds %d is negative (0 means the CA's default)", ErrInvalidTTL, seconds)
	}
	if seconds > int64(a.maxTTL/time.Second) {
		return a.maxTTL, nil
	}
	return a.EffectiveTTL(time.Duration(seconds) * time.Second)
}

func (s *Service) log(ctx context.Context, rl *requestLog, result string, elapsed time.Duration, err error) {
	attrs := []slog.Attr{
		slog.String("result", result),
		slog.Duration("duration", elapsed),
	}
	if rl.caller != nil {
		attrs = append(attrs, slog.String("caller", rl.caller.Namespace+"/"+rl.caller.ServiceAccount))
		if id, err := rl.caller.ID(s.authority.td); err == nil {
			attrs = append(attrs, slog.String("callerID", id.String()))
		}
		if rl.caller.PodName != "" {
			attrs = append(attrs, slog.String("pod", rl.caller.PodName))
		}
		if rl.caller.NodeName != "" {
			attrs = append(attrs, slog.String("node", rl.caller.NodeName))
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer", p.Addr.String()))
	}
	if rl.requested != "" {
		attrs = append(attrs, slog.String("requested", rl.requested))
	}
	if rl.ttl > 0 {
		attrs = append(attrs, slog.Duration("ttl", rl.ttl))
	}
	if rl.serial != "" {
		attrs = append(attrs, slog.String("serial", rl.serial), slog.Time("notAfter", rl.notAfter))
	}
	level := slog.LevelInfo
	if err != nil {
		// Status messages are built from our own errors and never contain the
		// token or the CSR.
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
		if rl.cause != nil {
			attrs = append(attrs, slog.String("cause", rl.cause.Error()))
		}
		level = slog.LevelWarn
		if result == ResultInternal || result == ResultUnavailable {
			level = slog.LevelError
		}
	}
	s.logger.LogAttrs(ctx, level, "certificate request", attrs...)
}

// bearerToken extracts the token from "authorization: Bearer <token>".
func bearerToken(ctx context.Context) (string, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", errors.New("missing \"authorization: Bearer <service-account token>\" metadata")
	}
	values := md.Get("authorization")
	switch len(values) {
	case 0:
		return "", errors.New("missing \"authorization: Bearer <service-account token>\" metadata")
	case 1:
	default:
		return "", errors.New("more than one authorization metadata value")
	}
	token, ok := ParseBearer(values[0])
	if !ok {
		return "", errors.New("authorization metadata is not \"Bearer <service-account token>\"")
	}
	return token, nil
}

// ParseBearer returns the token of an authorization value "Bearer <token>"
// (scheme case-insensitive, as RFC 6750 allows), or false for any other
// form. gRPC metadata and HTTP headers carry the same value.
func ParseBearer(value string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(value), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

func rawCerts(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}
