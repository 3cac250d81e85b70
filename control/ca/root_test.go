package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const testNS = "weft-system"

func TestLoadOrCreateRootCreatesOnce(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	opts := Options{Logger: discardLogger()}

	a1, err := LoadOrCreateRoot(ctx, client, testNS, opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := client.CoreV1().Secrets(testNS).Get(ctx, RootSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("root Secret not created: %v", err)
	}
	if len(s.Data[KeyCACert]) == 0 || len(s.Data[KeyCAKey]) == 0 {
		t.Fatalf("root Secret keys: %v", keysOf(s.Data))
	}
	root := a1.Certificate()
	if !root.IsCA || root.CheckSignatureFrom(root) != nil {
		t.Fatal("created root is not a self-signed CA")
	}
	if life := root.NotAfter.Sub(root.NotBefore); life < 10*365*24*time.Hour {
		t.Errorf("root lifetime %v, want 10 years", life)
	}
	if k, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("root key %T, want ECDSA P-256", root.PublicKey)
	}

	// A restart loads the same root and writes nothing.
	client.ClearActions()
	a2, err := LoadOrCreateRoot(ctx, client, testNS, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !a2.Certificate().Equal(root) {
		t.Fatal("second start did not reuse the root")
	}
	for _, act := range client.Actions() {
		if act.GetVerb() != "get" {
			t.Errorf("unexpected %s %s on restart", act.GetVerb(), act.GetResource().Resource)
		}
	}
}

// Two replicas race: both see no root, both create; the second Create gets
// AlreadyExists and must adopt the first one's root without overwriting it.
func TestLoadOrCreateRootRace(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	secretsGVR := corev1.SchemeGroupVersion.WithResource("secrets")

	var mu sync.Mutex
	gets, creates, alreadyExists := 0, 0, 0
	// The first two reads of the root miss, as if both replicas read before
	// either wrote.
	client.PrependReactor("get", "secrets", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.(k8stesting.GetAction).GetName() != RootSecretName {
			return false, nil, nil
		}
		mu.Lock()
		defer mu.Unlock()
		gets++
		if gets <= 2 {
			return true, nil, apierrors.NewNotFound(secretsGVR.GroupResource(), RootSecretName)
		}
		return false, nil, nil
	})
	client.PrependReactor("create", "secrets", func(action k8stesting.Action) (bool, runtime.Object, error) {
		obj := action.(k8stesting.CreateAction).GetObject()
		mu.Lock()
		defer mu.Unlock()
		creates++
		if err := client.Tracker().Create(secretsGVR, obj, testNS); err != nil {
			if apierrors.IsAlreadyExists(err) {
				alreadyExists++
			}
			return true, nil, err
		}
		return true, obj, nil
	})
	client.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		t.Error("the root Secret must never be updated")
		return true, nil, apierrors.NewBadRequest("no updates")
	})

	var wg sync.WaitGroup
	results := make([]*Authority, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			results[i], errs[i] = LoadOrCreateRoot(ctx, client, testNS, Options{Logger: discardLogger()})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	if creates != 2 || alreadyExists != 1 {
		t.Fatalf("creates=%d alreadyExists=%d, want 2 and 1", creates, alreadyExists)
	}
	stored, err := client.Tracker().Get(secretsGVR, testNS, RootSecretName)
	if err != nil {
		t.Fatal(err)
	}
	storedCerts, err := parseCertsPEM(stored.(*corev1.Secret).Data[KeyCACert])
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range results {
		if !a.Certificate().Equal(storedCerts[0]) {
			t.Errorf("replica %d uses a root other than the stored one", i)
		}
	}
}

func TestLoadOrCreateRootPlugin(t *testing.T) {
	ctx := context.Background()
	root := newSelfSigned(t, "corp root", time.Now().Add(5*365*24*time.Hour))
	inter := root.child(t, "weft intermediate", true, time.Now().Add(365*24*time.Hour))
	otherRoot := newSelfSigned(t, "other root", time.Now().Add(365*24*time.Hour))
	leafNotCA := root.child(t, "not a CA", false, time.Now().Add(365*24*time.Hour))
	expired := root.child(t, "expired intermediate", true, time.Now().Add(-time.Minute))
	otherKey := newSelfSigned(t, "x", time.Now().Add(time.Hour)).key

	good := map[string][]byte{
		KeyCACert:    certPEM(inter.cert),
		KeyCAKey:     keyPEM(t, inter.key),
		KeyRootCert:  certPEM(root.cert),
		KeyCertChain: certPEM(inter.cert, root.cert),
	}
	with := func(k string, v []byte) map[string][]byte {
		m := map[string][]byte{}
		for kk, vv := range good {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}

	tests := []struct {
		name    string
		data    map[string][]byte
		wantErr []string // substrings; nil = success
	}{
		{"valid intermediate", good, nil},
		{"cert-chain.pem optional", with(KeyCertChain, nil), nil},
		{"missing key", with(KeyCAKey, nil), []string{"cacerts", `"ca-key.pem"`, "missing"}},
		{"garbage key", with(KeyCAKey, []byte("not a key")), []string{"cacerts", `"ca-key.pem"`}},
		{"key does not match", with(KeyCAKey, keyPEM(t, otherKey)), []string{"cacerts", `"ca-key.pem"`, "does not belong", `"ca-cert.pem"`}},
		{"cert not a CA", map[string][]byte{KeyCACert: certPEM(leafNotCA.cert), KeyCAKey: keyPEM(t, leafNotCA.key), KeyRootCert: certPEM(root.cert)}, []string{"cacerts", `"ca-cert.pem"`, "not a CA"}},
		{"wrong root", with(KeyRootCert, certPEM(otherRoot.cert)), []string{"cacerts", `"root-cert.pem"`, "does not chain"}},
		{"garbage cert", with(KeyCACert, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")), []string{"cacerts", `"ca-cert.pem"`}},
		{"expired intermediate", map[string][]byte{KeyCACert: certPEM(expired.cert), KeyCAKey: keyPEM(t, expired.key), KeyRootCert: certPEM(root.cert)}, []string{"cacerts", "expired"}},
		{"missing root", with(KeyRootCert, nil), []string{"cacerts", `"root-cert.pem"`, "missing"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(&corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: PluginSecretName, Namespace: testNS},
				Data:       tc.data,
			})
			a, err := LoadOrCreateRoot(ctx, client, testNS, Options{Logger: discardLogger()})
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("want error")
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				if strings.Contains(err.Error(), "PRIVATE KEY") && strings.Contains(err.Error(), "-----") {
					t.Errorf("error leaks key material: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !a.Certificate().Equal(inter.cert) {
				t.Error("not signing with the plug-in intermediate")
			}
			if b := a.Bundle(); len(b) != 1 || !b[0].Equal(root.cert) {
				t.Error("bundle is not root-cert.pem")
			}
			if len(a.chain) != 1 || !a.chain[0].Equal(inter.cert) {
				t.Errorf("issued chain after leaf has %d certs, want the intermediate only", len(a.chain))
			}
			// No weft-ca-root is created when cacerts is present.
			if _, err := client.CoreV1().Secrets(testNS).Get(ctx, RootSecretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("weft-ca-root: %v, want NotFound", err)
			}
		})
	}
}

func TestLoadOrCreateRootCorruptRootIsNotReplaced(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: RootSecretName, Namespace: testNS},
		Data:       map[string][]byte{KeyCACert: []byte("junk")},
	})
	_, err := LoadOrCreateRoot(ctx, client, testNS, Options{Logger: discardLogger()})
	if err == nil || !strings.Contains(err.Error(), RootSecretName) {
		t.Fatalf("err %v, want an error naming %s", err, RootSecretName)
	}
	for _, act := range client.Actions() {
		if v := act.GetVerb(); v == "create" || v == "update" || v == "delete" {
			t.Errorf("unexpected %s", v)
		}
	}
}

func TestLoadOrCreateRootAPIError(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("secrets"), PluginSecretName, nil)
	})
	// Forbidden on cacerts must not fall back to a self-signed root.
	if _, err := LoadOrCreateRoot(context.Background(), client, testNS, Options{Logger: discardLogger()}); err == nil || !strings.Contains(err.Error(), PluginSecretName) {
		t.Fatalf("err %v", err)
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
