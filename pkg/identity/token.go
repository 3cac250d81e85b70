package identity

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TokenSource supplies the bearer token the agent presents to the CA (a
// service-account token for the CA's audience, "weft-ca" by default).
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// TokenSourceFunc adapts a function to TokenSource.
type TokenSourceFunc func(ctx context.Context) (string, error)

// Token implements TokenSource.
func (f TokenSourceFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

// FileTokenSource reads a projected service-account token from path on
// every call: the kubelet rotates the file in place, so the token is never
// cached. The token itself never appears in errors.
func FileTokenSource(path string) TokenSource {
	return fileTokenSource(path)
}

type fileTokenSource string

func (p fileTokenSource) Token(context.Context) (string, error) {
	b, err := os.ReadFile(string(p))
	if err != nil {
		return "", fmt.Errorf("reading the service-account token for the CA: %w (mount a projected token with audience weft-ca)", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("service-account token file " + string(p) + " is empty")
	}
	return tok, nil
}
