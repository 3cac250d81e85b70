package ca

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// AuthenticateContext authenticates the bearer token of an incoming gRPC
// call, returning gRPC status errors: Unauthenticated for a missing or bad
// token, Unavailable when the token cannot be checked right now.
func AuthenticateContext(ctx context.Context, authn Authenticator) (*Caller, error) {
	token, err := bearerToken(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	caller, err := authn.Authenticate(ctx, token)
	switch {
	case err == nil:
		return caller, nil
	case errors.Is(err, ErrUnauthenticated):
		return nil, status.Error(codes.Unauthenticated, err.Error())
	case ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	default:
		return nil, status.Error(codes.Unavailable, "cannot verify the token right now; retry")
	}
}
