package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	tandemv1 "github.com/tandem-ml/tandem/clients/go/tandemv1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// dial connects to the live server the test harness (tests/clients/test_go_client.py)
// started and named in TANDEM_ADDRESS.
func dial(t *testing.T) *grpc.ClientConn {
	address := os.Getenv("TANDEM_ADDRESS")
	if address == "" {
		t.Skip("TANDEM_ADDRESS is not set: `make test` runs this against a live server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, address, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		t.Fatalf("connect to %s: %v", address, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestTrainAndFollowToSuccess(t *testing.T) {
	conn := dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	state, err := trainAndFollow(ctx, conn, &tandemv1.TrainRequest{
		Model:     "mobilenet_v3_small",
		Dataset:   "synthetic",
		Epochs:    proto.Int32(1),
		ImageSize: proto.Int32(32),
		BatchSize: proto.Int32(16),
		Device:    "cpu",
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if state != tandemv1.TaskState_TASK_STATE_SUCCEEDED {
		t.Fatalf("task ended %v:\n%s", state, out.String())
	}
	if !strings.Contains(out.String(), "running on cpu") {
		t.Errorf("log lacks the running event:\n%s", out.String())
	}
}

func TestErrorsAreStatusCodes(t *testing.T) {
	conn := dial(t)
	_, err := tandemv1.NewTrainingServiceClient(conn).Train(context.Background(), &tandemv1.TrainRequest{
		Model: "resnet19", Dataset: "synthetic",
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("want InvalidArgument, got %v", err)
	}
	_, err = tandemv1.NewTaskServiceClient(conn).GetTask(context.Background(), &tandemv1.GetTaskRequest{TaskId: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("want NotFound, got %v", err)
	}
}
