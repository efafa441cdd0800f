// What the rental page (static/rental.js) takes from the bundle: its charts, the telemetry points it keeps, and
// the renter's reads from the provider's agent, signed by the browser wallet.
import { plots, TelemetryCharts, UsageChart } from "./charts.js";
import { AgentError, checkedAgent, RenterSession } from "./renterapi.js";
import { mergePoints } from "./telemetry.js";

window.gpuexRental = { plots, TelemetryCharts, UsageChart, AgentError, checkedAgent, RenterSession, mergePoints };
