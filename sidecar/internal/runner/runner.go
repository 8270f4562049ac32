// Package runner describes where a build runs: the CI provider's repository,
// ref, commit, job and runner, read from the provider's environment variables
// and overridden by flags. The sidecar sends it to central as the additive
// `runner` and `target` fields of a BuildIntent.
package runner

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/kache-planner/kache-planner/shared/wire"
)

// Provider names the CI system a context was read from.
type Provider string

// The providers Detect knows. ProviderNone means no CI variables were found;
// only overrides apply.
const (
	ProviderNone      Provider = ""
	ProviderGitHub    Provider = "github_actions"
	ProviderGitLab    Provider = "gitlab_ci"
	ProviderBuildkite Provider = "buildkite"
)

// Overrides come from flags and win over anything read from the environment.
// Empty fields do not override.
type Overrides struct {
	Repository string
	Ref        string
	Commit     string
	Target     string
	// Labels are merged over the detected labels, key by key.
	Labels map[string]string
	// HostTarget is the target used when neither Target nor
	// CARGO_BUILD_TARGET is set; pass HostTriple(runtime.GOOS, runtime.GOARCH).
	HostTarget string
}

// Info is the detected context of one runner.
type Info struct {
	Provider Provider
	Context  wire.RunnerContext
	// Target is the Rust target triple builds on this runner produce.
	Target string
}

// Detect reads the CI context from lookupEnv (os.LookupEnv in production) and
// applies o. The first provider whose marker variable is set wins: GitHub
// Actions (GITHUB_ACTIONS=true), GitLab CI (GITLAB_CI=true), Buildkite
// (BUILDKITE=true).
func Detect(lookupEnv func(string) (string, bool), o Overrides) Info {
	env := func(k string) string {
		v, _ := lookupEnv(k)
		return strings.TrimSpace(v)
	}
	var info Info
	switch {
	case env("GITHUB_ACTIONS") == "true":
		info = github(env)
	case env("GITLAB_CI") == "true":
		info = gitlab(env)
	case env("BUILDKITE") == "true":
		info = buildkite(env)
	}
	info.Target = firstNonEmpty(o.Target, env("CARGO_BUILD_TARGET"), o.HostTarget)

	c := &info.Context
	c.Repository = firstNonEmpty(o.Repository, c.Repository)
	c.GitRef = firstNonEmpty(o.Ref, c.GitRef)
	c.Commit = firstNonEmpty(o.Commit, c.Commit)
	if len(o.Labels) > 0 {
		if c.Labels == nil {
			c.Labels = make(map[string]string, len(o.Labels))
		}
		maps.Copy(c.Labels, o.Labels)
	}
	if len(c.Labels) == 0 {
		c.Labels = nil
	}
	return info
}

// github reads GitHub Actions' default environment variables.
func github(env func(string) string) Info {
	return Info{Provider: ProviderGitHub, Context: wire.RunnerContext{
		Repository: env("GITHUB_REPOSITORY"),
		Workflow:   env("GITHUB_WORKFLOW"),
		Job:        env("GITHUB_JOB"),
		RunID:      env("GITHUB_RUN_ID"),
		RunAttempt: env("GITHUB_RUN_ATTEMPT"),
		Event:      env("GITHUB_EVENT_NAME"),
		GitRef:     env("GITHUB_REF"),
		Commit:     env("GITHUB_SHA"),
		RunnerOS:   env("RUNNER_OS"),
		RunnerArch: env("RUNNER_ARCH"),
		// GitHub has no variable for the runner group or scale set;
		// RUNNER_ENVIRONMENT tells hosted from self-hosted at least.
		RunnerPool: env("RUNNER_ENVIRONMENT"),
		Labels:     labels("runner_name", env("RUNNER_NAME")),
	}}
}

// gitlab reads GitLab CI's predefined variables. The ref is written as a
// full ref name so that it compares with GitHub's GITHUB_REF.
func gitlab(env func(string) string) Info {
	ref := ""
	switch {
	case env("CI_COMMIT_TAG") != "":
		ref = "refs/tags/" + env("CI_COMMIT_TAG")
	case env("CI_MERGE_REQUEST_IID") != "":
		ref = "refs/merge-requests/" + env("CI_MERGE_REQUEST_IID") + "/head"
	case env("CI_COMMIT_REF_NAME") != "":
		ref = "refs/heads/" + env("CI_COMMIT_REF_NAME")
	}
	runnerOS, runnerArch, _ := strings.Cut(env("CI_RUNNER_EXECUTABLE_ARCH"), "/")
	return Info{Provider: ProviderGitLab, Context: wire.RunnerContext{
		Repository: env("CI_PROJECT_PATH"),
		Workflow:   env("CI_PIPELINE_NAME"),
		Job:        env("CI_JOB_NAME"),
		RunID:      env("CI_PIPELINE_ID"),
		Event:      env("CI_PIPELINE_SOURCE"),
		GitRef:     ref,
		Commit:     env("CI_COMMIT_SHA"),
		RunnerOS:   runnerOS,
		RunnerArch: runnerArch,
		RunnerPool: env("CI_RUNNER_DESCRIPTION"),
		Labels: labels(
			"job_id", env("CI_JOB_ID"),
			"runner_id", env("CI_RUNNER_ID"),
			"runner_tags", strings.Join(runnerTags(env("CI_RUNNER_TAGS")), ","),
		),
	}}
}

// buildkite reads Buildkite's agent environment. BUILDKITE_REPO is a clone
// URL; the repository is its "owner/name" path so it compares with GitHub's.
func buildkite(env func(string) string) Info {
	ref := ""
	switch {
	case env("BUILDKITE_TAG") != "":
		ref = "refs/tags/" + env("BUILDKITE_TAG")
	case env("BUILDKITE_BRANCH") != "":
		ref = "refs/heads/" + env("BUILDKITE_BRANCH")
	}
	commit := env("BUILDKITE_COMMIT")
	if commit == "HEAD" {
		// Buildkite's placeholder before the checkout resolves it.
		commit = ""
	}
	attempt := ""
	if n, err := strconv.Atoi(env("BUILDKITE_RETRY_COUNT")); err == nil && n >= 0 {
		attempt = strconv.Itoa(n + 1)
	}
	return Info{Provider: ProviderBuildkite, Context: wire.RunnerContext{
		Repository: repoPath(env("BUILDKITE_REPO")),
		Workflow:   env("BUILDKITE_PIPELINE_SLUG"),
		Job:        firstNonEmpty(env("BUILDKITE_STEP_KEY"), env("BUILDKITE_LABEL")),
		RunID:      env("BUILDKITE_BUILD_ID"),
		RunAttempt: attempt,
		Event:      env("BUILDKITE_SOURCE"),
		GitRef:     ref,
		Commit:     commit,
		RunnerPool: env("BUILDKITE_AGENT_META_DATA_QUEUE"),
		Labels:     labels("agent_name", env("BUILDKITE_AGENT_NAME")),
	}}
}

// repoPath turns a clone URL (https://host/owner/name.git,
// git@host:owner/name.git, ssh://git@host/owner/name) into "owner/name".
func repoPath(url string) string {
	if url == "" {
		return ""
	}
	rest := url
	if _, after, ok := strings.Cut(rest, "://"); ok {
		rest = after
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			rest = rest[i+1:]
		} else {
			rest = ""
		}
	} else if _, after, ok := strings.Cut(rest, ":"); ok {
		rest = after
	}
	rest = strings.TrimSuffix(strings.Trim(rest, "/"), ".git")
	if rest == "" {
		return url
	}
	return rest
}

// runnerTags reads CI_RUNNER_TAGS, which newer GitLab runners set to a JSON
// array and older ones to a comma-separated list. Tags come back sorted so
// the label does not depend on the runner's registration order.
func runnerTags(v string) []string {
	if v == "" {
		return nil
	}
	var tags []string
	if err := json.Unmarshal([]byte(v), &tags); err != nil {
		tags = strings.Split(v, ",")
	}
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// labels builds a map from key/value pairs, leaving out empty values.
func labels(kv ...string) map[string]string {
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			m[kv[i]] = kv[i+1]
		}
	}
	return m
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// ParseLabels reads a flag value of comma-separated key=value pairs, such as
// "pool=arm64,team=infra". Blank items are skipped; an item without '=' or
// with an empty key is an error.
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("parse labels: %q is not key=value", item)
		}
		out[k] = strings.TrimSpace(v)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// HostTriple is the Rust target triple of a host as kache writes its default
// manifest key: {arch}-unknown-linux-gnu, {arch}-apple-darwin,
// {arch}-pc-windows-msvc, else {arch}-unknown-{os}.
func HostTriple(goos, goarch string) string {
	arch := goarch
	switch goarch {
	case "amd64":
		arch = "x86_64"
	case "arm64":
		arch = "aarch64"
	case "386":
		arch = "i686"
	case "ppc64le":
		arch = "powerpc64le"
	case "riscv64":
		arch = "riscv64gc"
	}
	switch goos {
	case "linux":
		return arch + "-unknown-linux-gnu"
	case "darwin":
		return arch + "-apple-darwin"
	case "windows":
		return arch + "-pc-windows-msvc"
	}
	return arch + "-unknown-" + goos
}
