package runner

import (
	"reflect"
	"testing"

	"github.com/kache-planner/kache-planner/shared/wire"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		o    Overrides
		want Info
	}{
		{
			name: "no CI, no overrides",
			env:  map[string]string{"HOME": "/root"},
			want: Info{},
		},
		{
			name: "no CI, overrides and host target",
			env:  map[string]string{},
			o:    Overrides{Repository: "acme/app", Ref: "refs/heads/dev", Commit: "abc", HostTarget: "x86_64-unknown-linux-gnu", Labels: map[string]string{"pool": "big"}},
			want: Info{Target: "x86_64-unknown-linux-gnu", Context: wire.RunnerContext{
				Repository: "acme/app", GitRef: "refs/heads/dev", Commit: "abc", Labels: map[string]string{"pool": "big"}}},
		},
		{
			name: "github actions",
			env: map[string]string{
				"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/app", "GITHUB_REF": "refs/pull/7/merge",
				"GITHUB_SHA": "0123abcd", "GITHUB_WORKFLOW": "CI", "GITHUB_JOB": "build", "GITHUB_RUN_ID": "991",
				"GITHUB_RUN_ATTEMPT": "2", "GITHUB_EVENT_NAME": "pull_request", "RUNNER_OS": "Linux",
				"RUNNER_ARCH": "X64", "RUNNER_NAME": "arc-runner-x7k2", "RUNNER_ENVIRONMENT": "self-hosted",
			},
			o: Overrides{HostTarget: "x86_64-unknown-linux-gnu"},
			want: Info{Provider: ProviderGitHub, Target: "x86_64-unknown-linux-gnu", Context: wire.RunnerContext{
				Repository: "acme/app", Workflow: "CI", Job: "build", RunID: "991", RunAttempt: "2", Event: "pull_request",
				GitRef: "refs/pull/7/merge", Commit: "0123abcd", RunnerOS: "Linux", RunnerArch: "X64", RunnerPool: "self-hosted",
				Labels: map[string]string{"runner_name": "arc-runner-x7k2"}}},
		},
		{
			name: "github actions with overrides and CARGO_BUILD_TARGET",
			env: map[string]string{
				"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/app", "GITHUB_REF": "refs/heads/main",
				"GITHUB_SHA": "0123abcd", "RUNNER_NAME": "r1", "CARGO_BUILD_TARGET": "aarch64-unknown-linux-musl",
			},
			o: Overrides{Commit: "feed", Labels: map[string]string{"runner_name": "override", "team": "infra"}, HostTarget: "x86_64-unknown-linux-gnu"},
			want: Info{Provider: ProviderGitHub, Target: "aarch64-unknown-linux-musl", Context: wire.RunnerContext{
				Repository: "acme/app", GitRef: "refs/heads/main", Commit: "feed",
				Labels: map[string]string{"runner_name": "override", "team": "infra"}}},
		},
		{
			name: "flag target wins over CARGO_BUILD_TARGET",
			env:  map[string]string{"CARGO_BUILD_TARGET": "aarch64-unknown-linux-musl"},
			o:    Overrides{Target: "wasm32-unknown-unknown", HostTarget: "x86_64-unknown-linux-gnu"},
			want: Info{Target: "wasm32-unknown-unknown"},
		},
		{
			name: "gitlab branch pipeline, JSON runner tags",
			env: map[string]string{
				"GITLAB_CI": "true", "CI_PROJECT_PATH": "group/sub/app", "CI_COMMIT_REF_NAME": "main",
				"CI_COMMIT_SHA": "beef", "CI_PIPELINE_ID": "4242", "CI_JOB_NAME": "cargo build", "CI_JOB_ID": "77",
				"CI_PIPELINE_SOURCE": "push", "CI_RUNNER_TAGS": `["linux", "docker", "linux"]`, "CI_RUNNER_ID": "12",
				"CI_RUNNER_DESCRIPTION": "k8s-runners", "CI_RUNNER_EXECUTABLE_ARCH": "linux/arm64", "CI_PIPELINE_NAME": "nightly",
			},
			want: Info{Provider: ProviderGitLab, Context: wire.RunnerContext{
				Repository: "group/sub/app", Workflow: "nightly", Job: "cargo build", RunID: "4242", Event: "push",
				GitRef: "refs/heads/main", Commit: "beef", RunnerOS: "linux", RunnerArch: "arm64", RunnerPool: "k8s-runners",
				Labels: map[string]string{"job_id": "77", "runner_id": "12", "runner_tags": "docker,linux"}}},
		},
		{
			name: "gitlab tag pipeline, comma-separated runner tags",
			env: map[string]string{
				"GITLAB_CI": "true", "CI_PROJECT_PATH": "g/app", "CI_COMMIT_REF_NAME": "v1.2.0", "CI_COMMIT_TAG": "v1.2.0",
				"CI_RUNNER_TAGS": "docker, linux",
			},
			want: Info{Provider: ProviderGitLab, Context: wire.RunnerContext{
				Repository: "g/app", GitRef: "refs/tags/v1.2.0", Labels: map[string]string{"runner_tags": "docker,linux"}}},
		},
		{
			name: "gitlab merge request pipeline",
			env: map[string]string{
				"GITLAB_CI": "true", "CI_PROJECT_PATH": "g/app", "CI_COMMIT_REF_NAME": "feature", "CI_MERGE_REQUEST_IID": "31",
			},
			want: Info{Provider: ProviderGitLab, Context: wire.RunnerContext{Repository: "g/app", GitRef: "refs/merge-requests/31/head"}},
		},
		{
			name: "buildkite",
			env: map[string]string{
				"BUILDKITE": "true", "BUILDKITE_REPO": "git@github.com:acme/app.git", "BUILDKITE_BRANCH": "main",
				"BUILDKITE_COMMIT": "cafe", "BUILDKITE_PIPELINE_SLUG": "app-ci", "BUILDKITE_STEP_KEY": "build",
				"BUILDKITE_BUILD_ID": "0190-uuid", "BUILDKITE_RETRY_COUNT": "1", "BUILDKITE_SOURCE": "webhook",
				"BUILDKITE_AGENT_META_DATA_QUEUE": "rust", "BUILDKITE_AGENT_NAME": "agent-3",
			},
			want: Info{Provider: ProviderBuildkite, Context: wire.RunnerContext{
				Repository: "acme/app", Workflow: "app-ci", Job: "build", RunID: "0190-uuid", RunAttempt: "2", Event: "webhook",
				GitRef: "refs/heads/main", Commit: "cafe", RunnerPool: "rust", Labels: map[string]string{"agent_name": "agent-3"}}},
		},
		{
			name: "buildkite tag build with unresolved HEAD commit and label as job",
			env: map[string]string{
				"BUILDKITE": "true", "BUILDKITE_REPO": "https://github.com/acme/app.git", "BUILDKITE_TAG": "v2",
				"BUILDKITE_BRANCH": "v2", "BUILDKITE_COMMIT": "HEAD", "BUILDKITE_LABEL": ":rust: build",
			},
			want: Info{Provider: ProviderBuildkite, Context: wire.RunnerContext{
				Repository: "acme/app", Job: ":rust: build", GitRef: "refs/tags/v2"}},
		},
		{
			name: "github marker wins over gitlab marker",
			env:  map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "a/b", "GITLAB_CI": "true", "CI_PROJECT_PATH": "c/d"},
			want: Info{Provider: ProviderGitHub, Context: wire.RunnerContext{Repository: "a/b"}},
		},
		{
			name: "marker not exactly true is ignored",
			env:  map[string]string{"GITHUB_ACTIONS": "1", "GITHUB_REPOSITORY": "a/b"},
			want: Info{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Detect(envOf(tt.env), tt.o)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Detect:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestRepoPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"git@github.com:acme/app.git", "acme/app"},
		{"https://github.com/acme/app.git", "acme/app"},
		{"https://gitlab.example.com/group/sub/app", "group/sub/app"},
		{"ssh://git@host:22/acme/app.git", "acme/app"},
		{"https://host", "https://host"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := repoPath(tt.in); got != tt.want {
				t.Errorf("repoPath(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseLabels(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr bool
	}{
		{name: "empty", in: "", want: nil},
		{name: "blanks only", in: " , ,", want: nil},
		{name: "pairs", in: "pool=arm64, team = infra ,", want: map[string]string{"pool": "arm64", "team": "infra"}},
		{name: "empty value", in: "spot=", want: map[string]string{"spot": ""}},
		{name: "no equals", in: "pool", wantErr: true},
		{name: "empty key", in: "=x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLabels(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseLabels(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseLabels(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestHostTriple(t *testing.T) {
	tests := []struct{ goos, goarch, want string }{
		{"linux", "amd64", "x86_64-unknown-linux-gnu"},
		{"linux", "arm64", "aarch64-unknown-linux-gnu"},
		{"darwin", "arm64", "aarch64-apple-darwin"},
		{"windows", "amd64", "x86_64-pc-windows-msvc"},
		{"freebsd", "amd64", "x86_64-unknown-freebsd"},
	}
	for _, tt := range tests {
		t.Run(tt.goos+"/"+tt.goarch, func(t *testing.T) {
			if got := HostTriple(tt.goos, tt.goarch); got != tt.want {
				t.Errorf("HostTriple = %q, want %q", got, tt.want)
			}
		})
	}
}
