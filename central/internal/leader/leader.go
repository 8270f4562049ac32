// Package leader runs Lease-based leader election (coordination.k8s.io/v1)
// for kache-service's high-availability mode: every replica serves /healthz,
// only the Lease holder is ready and answers plans. A leader that loses the
// Lease steps down to follower and re-enters the election without restarting
// its process (kache's own service exits instead).
package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/kache-planner/kache-planner/shared/background"
)

// ServiceAccountNamespaceFile is where a pod finds its own namespace.
const ServiceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// ErrNoNamespace is returned when no Lease namespace can be found.
var ErrNoNamespace = errors.New("no lease namespace: set --ha-namespace or POD_NAMESPACE, or run in a pod")

// ResolveNamespace picks the Lease namespace as kache does: the flag, else
// POD_NAMESPACE, else the service-account namespace file; each trimmed, blank
// means absent.
func ResolveNamespace(flag string, getenv func(string) string, saFile string) (string, error) {
	if ns := strings.TrimSpace(flag); ns != "" {
		return ns, nil
	}
	if ns := strings.TrimSpace(getenv("POD_NAMESPACE")); ns != "" {
		return ns, nil
	}
	b, err := os.ReadFile(saFile)
	if err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns, nil
		}
	}
	return "", ErrNoNamespace
}

// Identity is the holder identity: $HOSTNAME (the pod name) or a random id.
func Identity(getenv func(string) string) string {
	if h := strings.TrimSpace(getenv("HOSTNAME")); h != "" {
		return h
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "kache-service-" + hex.EncodeToString(b[:])
}

// Config configures an Elector. Zero durations take kache's timings: a
// 15 s Lease, renewed every 2 s, given up after 10 s without renewal.
type Config struct {
	Namespace     string
	LeaseName     string
	Identity      string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

func (c Config) withDefaults() Config {
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = 15 * time.Second
	}
	if c.RenewDeadline <= 0 {
		c.RenewDeadline = 10 * time.Second
	}
	if c.RetryPeriod <= 0 {
		c.RetryPeriod = 2 * time.Second
	}
	return c
}

// Elector campaigns for the Lease until stopped and reports every change of
// leadership through onChange.
type Elector struct {
	cfg      Config
	client   kubernetes.Interface
	onChange func(leading bool)
	log      *slog.Logger

	task background.Task
}

// New returns an elector; Start begins campaigning.
func New(cfg Config, client kubernetes.Interface, onChange func(leading bool), log *slog.Logger) (*Elector, error) {
	cfg = cfg.withDefaults()
	if cfg.Namespace == "" || cfg.LeaseName == "" || cfg.Identity == "" {
		return nil, fmt.Errorf("create elector: namespace, lease name and identity are required (got %q, %q, %q)", cfg.Namespace, cfg.LeaseName, cfg.Identity)
	}
	if cfg.RenewDeadline >= cfg.LeaseDuration || cfg.RetryPeriod >= cfg.RenewDeadline {
		return nil, fmt.Errorf("create elector: want retry period < renew deadline < lease duration, got %s, %s, %s", cfg.RetryPeriod, cfg.RenewDeadline, cfg.LeaseDuration)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Elector{cfg: cfg, client: client, onChange: onChange, log: log}, nil
}

// Start campaigns in a goroutine owned by the elector.
func (e *Elector) Start(context.Context) error {
	e.task.Go(e.campaign)
	return nil
}

// Stop ends the campaign; a leader releases the Lease so a follower takes
// over at once instead of after the Lease expires.
func (e *Elector) Stop(ctx context.Context) error { return e.task.Stop(ctx) }

// campaign runs elections back to back: losing the Lease makes this replica
// a follower that campaigns again.
func (e *Elector) campaign(ctx context.Context) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.cfg.Namespace, Name: e.cfg.LeaseName},
		Client:     e.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.cfg.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   e.cfg.LeaseDuration,
			RenewDeadline:   e.cfg.RenewDeadline,
			RetryPeriod:     e.cfg.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            e.cfg.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) {
					e.log.Info("acquired lease", "lease", e.cfg.LeaseName, "namespace", e.cfg.Namespace, "identity", e.cfg.Identity)
					e.onChange(true)
				},
				OnStoppedLeading: func() {
					e.log.Warn("lost lease, stepping down to follower", "lease", e.cfg.LeaseName)
					e.onChange(false)
				},
				OnNewLeader: func(id string) {
					if id != e.cfg.Identity {
						e.log.Info("following", "leader", id)
					}
				},
			},
		})
		if err != nil {
			e.log.Error("leader election config", "error", err)
			return
		}
		le.Run(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(e.cfg.RetryPeriod):
		}
	}
}

// KubeClient connects to the Kubernetes API: the in-cluster config in a pod,
// else the standard KUBECONFIG loading rules.
func KubeClient() (kubernetes.Interface, error) {
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("load kubernetes config: %w", err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create kubernetes client: %w", err)
	}
	return c, nil
}
