// A sender that asks suppressd before every notice and records opt-outs (docs/clients.md, Go).
// scripts/check-protos compiles it against the code generated from proto/ (go_package
// github.com/suppressd/suppressd/gen/go/suppress/v1).
package main

import (
	"context"
	"log"
	"os"
	"time"

	suppressv1 "github.com/suppressd/suppressd/gen/go/suppress/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// mayNotify is fail-closed: only an OK answer saying "not suppressed" lets the notice go.
func mayNotify(ctx context.Context, c suppressv1.SuppressionClient, email, topic string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	res, err := c.CheckSuppressed(ctx, &suppressv1.CheckSuppressedRequest{
		Recipient: &suppressv1.Recipient{Id: &suppressv1.Recipient_Email{Email: email}},
		Scope:     &suppressv1.Scope{Channel: suppressv1.Channel_CHANNEL_EMAIL, Topic: topic},
	})
	if err != nil {
		log.Printf("check failed (%v): not sending", status.Code(err))
		return false
	}
	return !res.GetSuppressed()
}

// optOut records an opt-out, retrying transient failures with the same idempotency key, so that
// a retry of an opt-out that did land returns the first receipt instead of a second record.
func optOut(ctx context.Context, c suppressv1.SuppressionClient, email, key string) (*suppressv1.Receipt, error) {
	req := &suppressv1.OptOutRequest{
		Recipient:      &suppressv1.Recipient{Id: &suppressv1.Recipient_Email{Email: email}},
		Scope:          &suppressv1.Scope{Channel: suppressv1.Channel_CHANNEL_EMAIL},
		Reason:         suppressv1.Reason_REASON_USER_REQUEST,
		Source:         suppressv1.Source_SOURCE_API,
		IdempotencyKey: key,
	}
	var err error
	for attempt, backoff := 0, 200*time.Millisecond; attempt < 5; attempt, backoff = attempt+1, backoff*2 {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var res *suppressv1.OptOutResponse
		res, err = c.OptOut(callCtx, req)
		cancel()
		if err == nil {
			return res.GetReceipt(), nil
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
			time.Sleep(backoff)
		default:
			return nil, err // INVALID_ARGUMENT, PERMISSION_DENIED...: retrying will not help
		}
	}
	return nil, err
}

func main() {
	// Plaintext for a local server; use grpc.WithTransportCredentials(credentials.NewTLS(...)) in
	// production (and insecure.NewCredentials() where grpc-go is 1.34 or newer).
	conn, err := grpc.Dial(os.Getenv("SUPPRESSD_ADDR"), grpc.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := suppressv1.NewSuppressionClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(),
		"authorization", "Bearer "+os.Getenv("SUPPRESSD_API_KEY"))
	if mayNotify(ctx, client, "ada@example.com", "recall") {
		log.Print("sending")
	}
	receipt, err := optOut(ctx, client, "ada@example.com", "unsubscribe-ada-2026-12-04")
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("opted out: receipt %s", receipt.GetReceiptId())
}
