// Command example submits a Tandem training task and follows its log to the end.
//
//	go run . -address 127.0.0.1:50051 -model mobilenet_v3_small -dataset synthetic
//
// It exits with status 1 if the task does not succeed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	tandemv1 "github.com/tandem-ml/tandem/clients/go/tandemv1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// maxEventsPerMessage opts in to events that are ready together arriving in one
// LogsResponse (its Events); the most the server allows (tandem.contract in Python).
const maxEventsPerMessage = 1000

// terminal reports whether a task in state s has ended.
func terminal(s tandemv1.TaskState) bool {
	return s == tandemv1.TaskState_TASK_STATE_SUCCEEDED ||
		s == tandemv1.TaskState_TASK_STATE_FAILED ||
		s == tandemv1.TaskState_TASK_STATE_CANCELLED
}

// trainAndFollow submits req, prints the task's events to out as they happen, and
// returns the task's terminal state.
func trainAndFollow(ctx context.Context, conn *grpc.ClientConn, req *tandemv1.TrainRequest, out io.Writer) (tandemv1.TaskState, error) {
	submitted, err := tandemv1.NewTrainingServiceClient(conn).Train(ctx, req)
	if err != nil {
		return tandemv1.TaskState_TASK_STATE_UNSPECIFIED, fmt.Errorf("train: %w", err)
	}
	taskID := submitted.GetTask().GetTaskId()
	fmt.Fprintf(out, "submitted %s\n", taskID)
	stream, err := tandemv1.NewTaskServiceClient(conn).Logs(ctx, &tandemv1.LogsRequest{
		TaskId:              taskID,
		MaxEventsPerMessage: maxEventsPerMessage,
	})
	if err != nil {
		return tandemv1.TaskState_TASK_STATE_UNSPECIFIED, fmt.Errorf("logs: %w", err)
	}
	final := tandemv1.TaskState_TASK_STATE_UNSPECIFIED
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return final, nil
		}
		if err != nil {
			return final, fmt.Errorf("logs: %w", err)
		}
		events := resp.GetEvents()
		if len(events) == 0 {
			// A server older than max_events_per_message sends one event alone.
			events = []*tandemv1.TaskEvent{resp.GetEvent()}
		}
		for _, event := range events {
			fmt.Fprintf(out, "[%4d] %s\n", event.GetSeq(), event.GetMessage())
			if terminal(event.GetState()) {
				final = event.GetState()
			}
		}
	}
}

func main() {
	address := flag.String("address", "127.0.0.1:50051", "gRPC address of the Tandem server")
	model := flag.String("model", "mobilenet_v3_small", "torchvision model name")
	dataset := flag.String("dataset", "synthetic", "ImageFolder path or synthetic")
	epochs := flag.Int("epochs", 1, "epochs")
	imageSize := flag.Int("image-size", 64, "image size in pixels")
	device := flag.String("device", "cpu", "cpu, cuda, cuda:N or auto")
	flag.Parse()

	dialCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// grpc-go 1.33 (Debian): plain-text connections are asked for with WithInsecure.
	conn, err := grpc.DialContext(dialCtx, *address, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		log.Fatalf("connect to %s: %v", *address, err)
	}
	defer conn.Close()
	state, err := trainAndFollow(context.Background(), conn, &tandemv1.TrainRequest{
		Model:     *model,
		Dataset:   *dataset,
		Epochs:    proto.Int32(int32(*epochs)),
		ImageSize: proto.Int32(int32(*imageSize)),
		Device:    *device,
	}, os.Stdout)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(state)
	if state != tandemv1.TaskState_TASK_STATE_SUCCEEDED {
		os.Exit(1)
	}
}
