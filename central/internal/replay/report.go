package replay

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

// WriteJSON writes the results file.
func WriteJSON(path string, res *Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// WriteTable prints one row per policy for first builds of branches and for
// all builds.
func WriteTable(w io.Writer, res *Result) error {
	fmt.Fprintf(w, "project %s: %d commits (%d built), %d branches, %d builds, seed %d, context %s, namespace %q, warm lead %d ms\n",
		res.Project, res.Commits, res.BuiltCommits, res.Branches, res.Builds, res.Seed, res.Model.Context, res.Model.Namespace, res.Model.WarmLeadMs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tscope\tbuilds\trecall\tbyte_prec\tfetched_GiB\trequests\ton_time\tsaved_h\twall_s\t")
	for _, name := range res.Order {
		pr := res.Policies[name]
		for _, row := range []struct {
			scope string
			s     Summary
		}{{"first_build", pr.FirstBuild}, {"overall", pr.Overall}} {
			s := row.s
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f\t%.3f\t%.2f\t%d\t%.3f\t%.1f\t%.3f\t\n", name, row.scope, s.Builds, s.Recall, s.BytePrecision,
				float64(s.BytesFetched)/(1<<30), s.Requests, s.OnTime, float64(s.CompileMsSaved)/3.6e6, s.MeanBuildMs/1000)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}
