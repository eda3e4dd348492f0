"""Security tools: the rule-based audit, framework compliance, and alma://policies."""

import json
from typing import Annotated, Any

from mcp.server import MCPServer
from pydantic import Field

from alma_mcp.analysis.audit import AuditReport, audit
from alma_mcp.analysis.compliance import ComplianceReport, check_compliance
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.gcpause import without_gc
from alma_mcp.server.analysis import BlueprintArg
from alma_mcp.server.toolkit import READ_ONLY, coded_errors
from alma_mcp.services import Services


def register(server: MCPServer[Any], services: Services) -> None:
    limits = services.limits
    policies = services.policies
    budget = services.settings.output_max_items

    @server.tool(name="security_audit", title="Audit a blueprint's security", annotations=READ_ONLY)
    @coded_errors
    @without_gc  # loading and analysing one blueprint is one bulk section (see gcpause)
    def security_audit_tool(
        blueprint: BlueprintArg,
        severity_threshold: Annotated[
            str, Field(description="Lowest severity listed: critical, high, medium, low or info")
        ] = "info",
        frameworks: Annotated[
            list[str] | None,
            Field(
                description="Only rules mapped to these frameworks: cis, nist-800-53, pci-dss-4.0, hipaa, soc2, "
                "iso27001-2022"
            ),
        ] = None,
    ) -> AuditReport:
        """Check a blueprint against the rule catalogue (alma://policies): exposure, secrets, container
        hardening, data protection, availability, segmentation, logging, Proxmox and Kubernetes
        specifics, and internet-to-data-store paths. Findings carry the rule, severity, resource,
        JSON pointer, remediation (with a JSON Patch where one exists) and references; a 0-100 score
        by a documented formula; suppressions from metadata.alma.suppress are reported, not hidden."""
        report = audit(
            load_blueprint(blueprint, limits), policies, severity_threshold=severity_threshold, frameworks=frameworks
        )
        if len(report.findings) > budget:
            extra = len(report.findings) - budget
            report = report.model_copy(
                update={"findings": report.findings[:budget], "summary": f"{report.summary} ({extra} more not listed)"}
            )
        return report

    @server.tool(name="check_compliance", title="Check a blueprint against a framework", annotations=READ_ONLY)
    @coded_errors
    @without_gc  # loading and analysing one blueprint is one bulk section (see gcpause)
    def check_compliance_tool(
        blueprint: BlueprintArg,
        framework: Annotated[str, Field(description="cis, nist-800-53, pci-dss-4.0, hipaa, soc2 or iso27001-2022")],
    ) -> ComplianceReport:
        """Each control of a framework with its status (pass, fail, not_applicable, manual), the evidence
        (rule ids and resources) and the coverage. The mapping is indicative, not a certification."""
        return check_compliance(load_blueprint(blueprint, limits), policies, framework)

    @server.resource(
        "alma://policies",
        name="policies",
        title="Security rule catalogue",
        description="Every audit rule: id, title, severity, what it applies to, remediation and framework "
        "control mappings; the score formula.",
        mime_type="application/json",
    )
    def policies_resource() -> str:
        return json.dumps(policies.as_resource(), indent=2, sort_keys=True)
