-- The seed rule's intent in DuckDB SQL (see bench/README.md for the semantics).
-- Parameters, substituted by duckdb_seed.py: {file} (path), {threads}.
SET threads = {threads};
WITH ev AS (
    SELECT
        DeviceName,
        ActionType,
        RemoteIP,
        LocalPort,
        AdditionalFields,
        -- Epoch-aligned 5-minute bins, like KQL's bin(Timestamp, 5m).
        CAST(floor(epoch(CAST(Timestamp AS TIMESTAMPTZ)) / 300) AS BIGINT) * 300 AS bin
    FROM read_ndjson('{file}', columns = {
        'Timestamp': 'VARCHAR', 'DeviceName': 'VARCHAR', 'ActionType': 'VARCHAR',
        'RemoteIP': 'VARCHAR', 'LocalPort': 'BIGINT', 'AdditionalFields': 'VARCHAR'})
),
now_bin AS (SELECT max(bin) AS now FROM ev),
bins AS (
    SELECT
        DeviceName,
        bin,
        count(*) FILTER (WHERE ActionType = 'InboundConnectionAccepted' AND LocalPort = 443) AS RequestCount,
        count(DISTINCT RemoteIP) FILTER (WHERE ActionType = 'InboundConnectionAccepted' AND LocalPort = 443) AS UniqueSourceIPs,
        sum(
            TRY_CAST(json_extract_string(AdditionalFields, '$.orig_bytes') AS BIGINT)
            + TRY_CAST(json_extract_string(AdditionalFields, '$.resp_bytes') AS BIGINT)
        ) FILTER (WHERE ActionType LIKE '%ConnectionInspected' AND LocalPort = 443
                  AND json_extract_string(AdditionalFields, '$.direction') = 'In') AS TotalBytes
    FROM ev, now_bin
    WHERE bin >= now - 86400 AND bin < now
    GROUP BY DeviceName, bin
),
baseline AS (
    -- Mean and sample stdev over all 276 baseline bins, zero-filled. Only devices with at least
    -- one seed-matching event in the baseline window have a baseline.
    SELECT
        DeviceName,
        sum(RequestCount) / 276.0 AS mean,
        sqrt(greatest((sum(RequestCount * RequestCount) - 276 * pow(sum(RequestCount) / 276.0, 2)) / 275.0, 0)) AS sd
    FROM bins, now_bin
    WHERE bin < now - 3600
    GROUP BY DeviceName
    HAVING sum(RequestCount) > 0
)
SELECT
    strftime(make_timestamp(c.bin * 1000000), '%Y-%m-%dT%H:%M:%SZ') AS TimeGenerated,
    c.DeviceName,
    c.RequestCount,
    c.UniqueSourceIPs,
    c.TotalBytes,
    CASE
        WHEN c.RequestCount > 20000 AND c.UniqueSourceIPs > 500 THEN 'High'
        WHEN c.RequestCount > 10000 AND c.UniqueSourceIPs > 300 THEN 'Medium'
        ELSE 'Low'
    END AS AttackConfidence
FROM bins c
CROSS JOIN now_bin
LEFT JOIN baseline b ON b.DeviceName = c.DeviceName
WHERE c.bin >= now - 3600
  AND c.RequestCount > 0
  AND ((b.DeviceName IS NOT NULL AND c.RequestCount > b.mean + 5 * b.sd) OR c.UniqueSourceIPs > 300)
ORDER BY c.RequestCount DESC, c.bin, c.DeviceName;
