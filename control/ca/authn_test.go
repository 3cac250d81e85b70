package ca

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	authv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	k8stesting "k8s.io/client-go/testing"
)

// fakeToken describes what the fake API server says about a token.
type fakeToken struct {
	authenticated bool
	err           string
	username      string
	audiences     []string
	extra         map[string]authenticationv1.ExtraValue
}

// tokenReviewClient is a fake clientset answering TokenReviews from tokens
// and counting them.
func tokenReviewClient(t *testing.T, tokens map[string]fakeToken, reviews *atomic.Int32) *fake.Clientset {
	t.Helper()
	client := fake.NewClientset()
	client.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		tr := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		if len(tr.Spec.Audiences) != 1 || tr.Spec.Audiences[0] != DefaultAudience {
			t.Errorf("TokenReview audiences %v, want [%s]", tr.Spec.Audiences, DefaultAudience)
		}
		if tr.Spec.Token == "api-down" {
			return true, nil, apierrors.NewServiceUnavailable("etcd is sad")
		}
		ft, ok := tokens[tr.Spec.Token]
		if !ok {
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: false, Error: "invalid bearer token"}
			return true, tr, nil
		}
		tr.Status = authenticationv1.TokenReviewStatus{
			Authenticated: ft.authenticated,
			Error:         ft.err,
			Audiences:     ft.audiences,
			User:          authenticationv1.UserInfo{Username: ft.username, Extra: ft.extra},
		}
		return true, tr, nil
	})
	return client
}

func podExtras(pod, uid, node string) map[string]authenticationv1.ExtraValue {
	m := map[string]authenticationv1.ExtraValue{
		ExtraPodName: {pod},
		ExtraPodUID:  {uid},
	}
	if node != "" {
		m[ExtraNodeName] = authenticationv1.ExtraValue{node}
	}
	return m
}

var testTokens = map[string]fakeToken{
	"productpage": {authenticated: true, username: "system:serviceaccount:default:bookinfo-productpage", audiences: []string{"weft-ca"},
		extra: podExtras("productpage-v1-abc", "uid-pp", "node-a")},
	"agent-no-node": {authenticated: true, username: "system:serviceaccount:weft-system:weft-node-agent", audiences: []string{"weft-ca"},
		extra: podExtras("weft-node-agent-xyz", "uid-agent", "")},
	"legacy":  {authenticated: true, username: "system:serviceaccount:default:old", audiences: []string{"weft-ca"}},
	"expired": {authenticated: false, err: "token has expired", username: ""},
	"api-audience": {authenticated: true, username: "system:serviceaccount:default:reviews",
		audiences: []string{"https://kubernetes.default.svc.cluster.local"}},
	"no-audience": {authenticated: true, username: "system:serviceaccount:default:reviews"},
	"user":        {authenticated: true, username: "alice@example.com", audiences: []string{"weft-ca"}},
	"node":        {authenticated: true, username: "system:node:node-a", audiences: []string{"weft-ca"}},
	"bad-sa-name": {authenticated: true, username: "system:serviceaccount:default:a:b", audiences: []string{"weft-ca"}},
}

func TestTokenReviewAuthenticator(t *testing.T) {
	var reviews atomic.Int32
	client := tokenReviewClient(t, testTokens, &reviews)

	tests := []struct {
		token     string
		want      *Caller
		wantErr   error
		errSubstr string
	}{
		{token: "productpage", want: &Caller{Username: "system:serviceaccount:default:bookinfo-productpage", Namespace: "default",
			ServiceAccount: "bookinfo-productpage", PodName: "productpage-v1-abc", PodUID: "uid-pp", NodeName: "node-a"}},
		{token: "agent-no-node", want: &Caller{Username: "system:serviceaccount:weft-system:weft-node-agent", Namespace: "weft-system",
			ServiceAccount: "weft-node-agent", PodName: "weft-node-agent-xyz", PodUID: "uid-agent"}},
		{token: "legacy", want: &Caller{Username: "system:serviceaccount:default:old", Namespace: "default", ServiceAccount: "old"}},
		{token: "", wantErr: ErrUnauthenticated},
		{token: "unknown", wantErr: ErrUnauthenticated, errSubstr: "invalid bearer token"},
		{token: "expired", wantErr: ErrUnauthenticated, errSubstr: "expired"},
		{token: "api-audience", wantErr: ErrUnauthenticated, errSubstr: "audience"},
		{token: "no-audience", wantErr: ErrUnauthenticated, errSubstr: "audience"},
		{token: "user", wantErr: ErrUnauthenticated, errSubstr: "not a service account"},
		{token: "node", wantErr: ErrUnauthenticated, errSubstr: "not a service account"},
		{token: "bad-sa-name", wantErr: ErrUnauthenticated, errSubstr: "not a service account"},
		{token: "api-down", errSubstr: "TokenReview failed"},
	}
	for _, tc := range tests {
		t.Run(tc.token, func(t *testing.T) {
			authn := NewTokenReviewAuthenticator(client, TokenReviewOptions{})
			got, err := authn.Authenticate(context.Background(), tc.token)
			if tc.want != nil {
				if err != nil {
					t.Fatal(err)
				}
				if *got != *tc.want {
					t.Fatalf("caller %+v, want %+v", *got, *tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("authenticated as %+v, want error", got)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && errors.Is(err, ErrUnauthenticated) {
				t.Errorf("API failure %v must not be ErrUnauthenticated (it is transient)", err)
			}
			if !strings.Contains(err.Error(), tc.errSubstr) {
				t.Errorf("err %q does not mention %q", err, tc.errSubstr)
			}
		})
	}
}

// An API server that quotes the token in an error must not make it reach
// our error messages (and so the logs).
func TestTokenReviewAuthenticatorNeverEchoesToken(t *testing.T) {
	const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl"
	var reviews atomic.Int32
	client := tokenReviewClient(t, map[string]fakeToken{jwt: {err: "bad token " + jwt}}, &reviews)
	_, err := NewTokenReviewAuthenticator(client, TokenReviewOptions{}).Authenticate(context.Background(), jwt)
	if !errors.Is(err, ErrUnauthenticated) || strings.Contains(err.Error(), jwt) {
		t.Fatalf("err %q", err)
	}
	client.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection reset while sending " + jwt)
	})
	_, err = NewTokenReviewAuthenticator(client, TokenReviewOptions{}).Authenticate(context.Background(), jwt)
	if err == nil || strings.Contains(err.Error(), jwt) {
		t.Fatalf("err %q", err)
	}
}

func TestTokenReviewAuthenticatorCache(t *testing.T) {
	var reviews atomic.Int32
	client := tokenReviewClient(t, testTokens, &reviews)
	clock := newFakeClock()
	authn := NewTokenReviewAuthenticator(client, TokenReviewOptions{Now: clock.Now, CacheTTL: time.Minute /* capped at 10s */})
	ctx := context.Background()

	steps := []struct {
		token   string
		advance time.Duration
		reviews int32 // cumulative
	}{
		{"productpage", 0, 1},
		{"productpage", 5 * time.Second, 1}, // cached
		{"legacy", 0, 2},                    // other token, other entry
		{"productpage", 4 * time.Second, 2}, // 9s: still cached
		{"productpage", 2 * time.Second, 3}, // 11s: expired, reviewed again
		{"unknown", 0, 4},                   // failures ...
		{"unknown", 0, 5},                   // ... are not cached
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		c, err := authn.Authenticate(ctx, s.token)
		if s.token != "unknown" && err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := reviews.Load(); got != s.reviews {
			t.Fatalf("step %d (%s): %d TokenReviews, want %d", i, s.token, got, s.reviews)
		}
		if c != nil {
			c.Namespace = "mutated" // must not poison the cache
		}
	}
	c, err := authn.Authenticate(ctx, "productpage")
	if err != nil || c.Namespace != "default" {
		t.Fatalf("cached caller %+v, %v", c, err)
	}
	for k := range authn.cache {
		if strings.Contains(string(k[:]), "productpage") {
			t.Fatal("cache keyed by the raw token")
		}
	}
}

// reviewFunc is a clientset whose TokenReviews are answered by create,
// outside the fake's lock (which runs one reaction at a time).
type reviewFunc struct {
	*fake.Clientset
	create func(*authenticationv1.TokenReview) (*authenticationv1.TokenReview, error)
}

func (c reviewFunc) AuthenticationV1() authv1client.AuthenticationV1Interface {
	return reviewAPI{c.Clientset.AuthenticationV1(), c.create}
}

type reviewAPI struct {
	authv1client.AuthenticationV1Interface
	create func(*authenticationv1.TokenReview) (*authenticationv1.TokenReview, error)
}

func (a reviewAPI) TokenReviews() authv1client.TokenReviewInterface {
	return tokenReviews{create: a.create}
}

type tokenReviews struct {
	authv1client.TokenReviewInterface
	create func(*authenticationv1.TokenReview) (*authenticationv1.TokenReview, error)
}

func (r tokenReviews) Create(_ context.Context, tr *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	return r.create(tr.DeepCopy())
}

// TestTokenReviewsAreBounded: a flood of streams with fresh bad tokens
// keeps at most MaxConcurrentReviews TokenReviews in flight; the rest wait
// for a slot, and give up at the caller's timeout, not as a bad token.
func TestTokenReviewsAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var inFlight atomic.Int32
		reject := func(tr *authenticationv1.TokenReview) (*authenticationv1.TokenReview, error) {
			inFlight.Add(1)
			defer inFlight.Add(-1)
			<-release
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: false, Error: "invalid bearer token"}
			return tr, nil
		}
		a := NewTokenReviewAuthenticator(reviewFunc{fake.NewClientset(), reject}, TokenReviewOptions{MaxConcurrentReviews: 4, Timeout: time.Minute})
		errs := make(chan error, 20)
		for i := range 20 {
			go func() {
				_, err := a.Authenticate(context.Background(), fmt.Sprintf("garbage-token-%02d", i))
				errs <- err
			}()
		}
		synctest.Wait() // every caller holds a slot or waits for one
		if n := inFlight.Load(); n != 4 {
			t.Errorf("%d TokenReviews in flight, want the limit 4", n)
		}
		close(release)
		for range 20 {
			if err := <-errs; !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("bad token: %v, want ErrUnauthenticated", err)
			}
		}

		// Every slot taken for longer than the timeout: a caller gives up
		// with an error that is not a verdict on its token.
		block := make(chan struct{})
		a = NewTokenReviewAuthenticator(reviewFunc{fake.NewClientset(), func(*authenticationv1.TokenReview) (*authenticationv1.TokenReview, error) {
			<-block
			return nil, errors.New("released")
		}}, TokenReviewOptions{MaxConcurrentReviews: 4, Timeout: time.Minute})
		for i := range 4 {
			go a.Authenticate(context.Background(), fmt.Sprintf("slow-%d", i))
		}
		synctest.Wait()
		_, err := a.Authenticate(context.Background(), "one-more")
		if err == nil || errors.Is(err, ErrUnauthenticated) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("waiting for a slot past the timeout: %v, want a deadline error that is not ErrUnauthenticated", err)
		}
		close(block)
	})
}
