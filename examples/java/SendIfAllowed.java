// A sender that asks suppressd before every notice and records opt-outs (docs/clients.md, Java).
// scripts/check-protos compiles it against the code generated from proto/ (java_package
// dev.suppressd.suppress.v1) and grpc-java.

import dev.suppressd.suppress.v1.Channel;
import dev.suppressd.suppress.v1.CheckSuppressedRequest;
import dev.suppressd.suppress.v1.CheckSuppressedResponse;
import dev.suppressd.suppress.v1.OptOutRequest;
import dev.suppressd.suppress.v1.Reason;
import dev.suppressd.suppress.v1.Receipt;
import dev.suppressd.suppress.v1.Recipient;
import dev.suppressd.suppress.v1.Scope;
import dev.suppressd.suppress.v1.Source;
import dev.suppressd.suppress.v1.SuppressionGrpc;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.MetadataUtils;
import java.util.concurrent.TimeUnit;

public final class SendIfAllowed {
  private final SuppressionGrpc.SuppressionBlockingStub stub;

  SendIfAllowed(ManagedChannel channel, String apiKey) {
    Metadata headers = new Metadata();
    headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + apiKey);
    this.stub = SuppressionGrpc.newBlockingStub(channel)
        .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
  }

  /** Fail-closed: only an OK answer saying "not suppressed" lets the notice go. */
  boolean mayNotify(String email, String topic) {
    try {
      CheckSuppressedResponse res = stub.withDeadlineAfter(2, TimeUnit.SECONDS)
          .checkSuppressed(CheckSuppressedRequest.newBuilder()
              .setRecipient(Recipient.newBuilder().setEmail(email))
              .setScope(Scope.newBuilder().setChannel(Channel.CHANNEL_EMAIL).setTopic(topic))
              .build());
      return !res.getSuppressed();
    } catch (StatusRuntimeException e) {
      return false; // any error: do not send
    }
  }

  /** Records an opt-out, retrying transient failures with the same idempotency key. */
  Receipt optOut(String email, String idempotencyKey) throws InterruptedException {
    OptOutRequest req = OptOutRequest.newBuilder()
        .setRecipient(Recipient.newBuilder().setEmail(email))
        .setScope(Scope.newBuilder().setChannel(Channel.CHANNEL_EMAIL))
        .setReason(Reason.REASON_USER_REQUEST)
        .setSource(Source.SOURCE_API)
        .setIdempotencyKey(idempotencyKey)
        .build();
    long backoffMs = 200;
    for (int attempt = 1; ; attempt++) {
      try {
        return stub.withDeadlineAfter(5, TimeUnit.SECONDS).optOut(req).getReceipt();
      } catch (StatusRuntimeException e) {
        Status.Code code = e.getStatus().getCode();
        boolean transient_ = code == Status.Code.UNAVAILABLE || code == Status.Code.DEADLINE_EXCEEDED
            || code == Status.Code.RESOURCE_EXHAUSTED || code == Status.Code.ABORTED;
        if (!transient_ || attempt == 5) {
          throw e;
        }
        Thread.sleep(backoffMs);
        backoffMs *= 2;
      }
    }
  }

  public static void main(String[] args) throws InterruptedException {
    ManagedChannel channel = ManagedChannelBuilder.forTarget(System.getenv("SUPPRESSD_ADDR"))
        .usePlaintext() // a local server; drop it for TLS
        .build();
    SendIfAllowed sender = new SendIfAllowed(channel, System.getenv("SUPPRESSD_API_KEY"));
    if (sender.mayNotify("ada@example.com", "recall")) {
      System.out.println("sending");
    }
    System.out.println("opted out: " + sender.optOut("ada@example.com", "unsubscribe-ada-2026-12-04").getReceiptId());
    channel.shutdown();
  }
}
